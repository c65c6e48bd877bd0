"""Which messages a reader wants: topics (with or without prefix), users and packages.

Topic filters go to the subscriber (ZeroMQ prefix subscriptions, replay
requests); user and package filters are applied to each received message. They
read the envelope's ``headers`` (``fedora_messaging_user_<name>`` /
``busgate_package_<name>``, written by the publisher from the message type), so a
reader needs no type to filter; an envelope without headers (an older or foreign
publisher), or one whose publisher knew no type for it (headers naming the base
type), is asked through the reader's type's ``usernames`` / ``packages``. Headers
carry at most :data:`gateway.messages.MAX_HEADER_NAMES` names each: when they are
full the type is asked too, so a push by many authors is still found by the last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.messages import (
    BASE_NAME,
    MAX_HEADER_NAMES,
    PACKAGE_HEADER_PREFIX,
    SCHEMA_HEADER,
    USER_HEADER_PREFIX,
    Message,
    names_in_headers,
)


def expand_topic(value: str, topic_prefix: str) -> str:
    """A ``--topic``/``--exclude`` value as a full topic prefix: ``dak.package`` ->
    ``org.<distribution>.<env>.dak.package``; a value starting with ``org.`` is kept."""
    if not value or value == "org" or value.startswith("org."):
        return value
    return f"{topic_prefix}.{value}"


def split_names(values: Iterable[str]) -> frozenset[str]:
    """Names from repeated options, each possibly comma-separated (fedmsg-tail's habit)."""
    return frozenset(name.strip() for value in values for name in value.split(",")
                     if name.strip())


class NameFilter:
    """Keep messages concerning any of ``users`` (when given) and any of ``packages``
    (when given); an empty set does not filter."""

    def __init__(self, users: Iterable[str] = (), packages: Iterable[str] = ()):
        self.users = frozenset(users)
        self.packages = frozenset(packages)

    def __bool__(self) -> bool:
        return bool(self.users or self.packages)

    def matches(self, envelope: Mapping[str, Any], message: Message) -> bool:
        head = envelope.get("headers")
        if not isinstance(head, Mapping) or SCHEMA_HEADER not in head or (
                head[SCHEMA_HEADER] == BASE_NAME and type(message) is not Message):
            head = None  # no headers, or written without the type this reader has
        return (self._any(self.users, head, USER_HEADER_PREFIX, message, "usernames")
                and self._any(self.packages, head, PACKAGE_HEADER_PREFIX, message, "packages"))

    @staticmethod
    def _any(wanted: frozenset[str], head: Mapping[str, Any] | None, prefix: str,
             message: Message, attribute: str) -> bool:
        if not wanted:
            return True
        if head is not None:
            named = names_in_headers(head, prefix)
            if wanted.intersection(named):
                return True
            if len(named) < MAX_HEADER_NAMES:
                return False  # the headers name them all
        try:
            names = getattr(message, attribute)
        except Exception:
            return False  # a type that fails on this body names nobody
        return any(isinstance(n, str) and n in wanted for n in names or ())
