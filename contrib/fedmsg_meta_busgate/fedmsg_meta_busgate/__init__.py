"""fedmsg.meta processor for busgate: stock fedmsg tools read busgate's summaries.

fedmsg.meta finds processors on the ``fedmsg.meta`` entry point group and asks the
first that claims a message (``handle_msg``) for its subtitle, link, users and
packages. This processor answers from busgate's message types, through the same
function ``busgate tail --terse`` uses (:func:`gateway.display.describe`), so both
print the same line for the same message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fedmsg.meta.base import BaseProcessor

from gateway import display
from gateway.messages import SCHEMA_HEADER, Message, TypeIndex

__all__ = ["BusgateProcessor", "type_index"]


def type_index(config: Mapping[str, Any]) -> TypeIndex:
    """The message types for a fedmsg ``config``: ``busgate.type_index`` when given (a
    :class:`TypeIndex`, for embedding and tests), else the registered sources' types
    under busgate's settings (``busgate.config``, else ``$BUSGATE_CONFIG``, else the
    defaults), which give e.g. the configured git service token."""
    given = config.get("busgate.type_index")
    if given is not None:
        if not isinstance(given, TypeIndex):
            raise TypeError("busgate.type_index must be a gateway.messages.TypeIndex")
        return given
    from gateway import config as busgate_config
    from gateway import sources

    return sources.type_index(busgate_config.load(config.get("busgate.config")))


class BusgateProcessor(BaseProcessor):
    """Every busgate topic (any service): ``title`` is the topic tail, ``subtitle`` the
    type's summary, ``link`` its url, ``usernames`` / ``packages`` its own."""

    __name__ = "busgate"
    __description__ = ("a Linux distribution's archive, bug tracker, build daemons and "
                       "git pushes, bridged onto the bus by busgate")
    __obj__ = "Distribution Events"
    __link__ = "https://www.debian.org/"
    __docs__ = "https://fedmsg.readthedocs.io/en/stable/meta/"
    __icon__ = "https://www.debian.org/logos/openlogo-nd-50.png"
    #: busgate's ``org.<distribution>.<env>``: any distribution and environment.
    topic_prefix_re = r"org\.[a-z0-9][a-z0-9-]*\.[a-z0-9][a-z0-9-]*"

    def __init__(self, internationalization_callable: Any, **config: Any):
        super().__init__(internationalization_callable, **config)
        self.index = type_index(config)
        for key in ("link", "docs", "icon"):
            value = config.get(f"busgate.{key}")
            if isinstance(value, str):
                setattr(self, f"__{key}__", value)

    # -- which messages -------------------------------------------------------------------
    def handle_msg(self, msg: Any, **config: Any) -> str | None:
        """The topic tail when the message is busgate's (its headers name a type busgate
        knows, or it carries busgate's ``publisher_epoch``) or a busgate type claims its
        topic; None otherwise, so other processors get it."""
        if not isinstance(msg, Mapping):
            return None
        topic = msg.get("topic")
        if not isinstance(topic, str) or not _BUSGATE_TOPIC.match(topic):
            return None
        head = msg.get("headers")
        tail = display.topic_tail(topic)
        if isinstance(head, Mapping) and self.index.by_name(str(head.get(SCHEMA_HEADER))):
            return tail
        if "publisher_epoch" in msg:
            return tail
        if self.index.lookup(tuple(tail.split("."))) is not Message:
            return tail
        return None

    # -- what they say --------------------------------------------------------------------
    def _describe(self, msg: Mapping[str, Any]) -> display.Description:
        return display.describe(msg, self.index)

    def subtitle(self, msg: Mapping[str, Any], **config: Any) -> str:
        return self._describe(msg).summary

    def link(self, msg: Mapping[str, Any], **config: Any) -> str:
        return self._describe(msg).url or ""

    def usernames(self, msg: Mapping[str, Any], **config: Any) -> set[str]:
        return _names(self._describe(msg).message, "usernames")

    def packages(self, msg: Mapping[str, Any], **config: Any) -> set[str]:
        return _names(self._describe(msg).message, "packages")

    def objects(self, msg: Mapping[str, Any], **config: Any) -> set[str]:
        """``packages/<name>`` per package, else the topic tail as a path
        (``dak/package/accept``): fedmsg's slash-delimited objects."""
        packages = self.packages(msg)
        if packages:
            return {f"packages/{name}" for name in packages}
        return {display.topic_tail(str(msg.get("topic", ""))).replace(".", "/")}


#: ``org.<distribution>.<env>.<service>.``: where busgate's tokens start (fedmsg's own
#: ``__prefix__`` expects the processor's name as the service token).
_BUSGATE_TOPIC = re.compile(BusgateProcessor.topic_prefix_re + r"\.[a-z0-9][a-z0-9-]*\.")


def _names(message: Message, attribute: str) -> set[str]:
    try:
        names = getattr(message, attribute)
    except Exception:
        return set()  # a type that fails on this body names nobody
    return {name for name in names or () if isinstance(name, str)}
