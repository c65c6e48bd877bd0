"""What ``busgate irc`` says where: the routing table and the one line per message.

A route sends the messages that match all of its non-empty filters (topic prefixes,
excluded prefixes, packages, users: :mod:`gateway.msgfilter`, the same rules as
``busgate tail``) to its channels; a message matching several routes reaches each
channel once. Without routes, every message goes to every configured channel.

The line is the message type's summary and link (:func:`gateway.display.describe`, which
already escapes control characters, so a message cannot inject IRC colours, CTCP or a
second command), the topic's tail in a mIRC colour chosen per service by a stable hash,
and it is cut to ``max_line_bytes`` (UTF-8) by shortening the summary, never the link.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway import display, msgfilter
from gateway.messages import TypeIndex

#: mIRC colour codes a service may get (no white, black or greys: unreadable on some
#: backgrounds): green, red, brown, purple, orange, light green, cyan, light cyan,
#: light blue, pink.
MIRC_PALETTE = ("03", "04", "05", "06", "07", "09", "10", "11", "12", "13")
COLOUR = "\x03"
RESET = "\x0f"
ELLIPSIS = "…"


def mirc_colour(service: str) -> str:
    """The mIRC colour code of a service (stable across runs and machines)."""
    return MIRC_PALETTE[zlib.crc32(service.encode()) % len(MIRC_PALETTE)]


@dataclass(frozen=True)
class Route:
    channels: tuple[str, ...]
    topics: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    names: msgfilter.NameFilter = field(default_factory=msgfilter.NameFilter)

    def matches(self, envelope: Mapping[str, Any], index: TypeIndex) -> bool:
        topic = str(envelope.get("topic", ""))
        if self.topics and not topic.startswith(self.topics):
            return False
        if self.exclude and topic.startswith(self.exclude):
            return False
        return not self.names or self.names.matches(envelope,
                                                    display.message_of(envelope, index))


class Router:
    """The routing table of ``[irc]``."""

    def __init__(self, routes: Iterable[Route], channels: Iterable[str] = ()):
        self.routes = list(routes)
        self.default = tuple(dict.fromkeys(channels))

    @classmethod
    def from_settings(cls, conf: Any, topic_prefix: str) -> Router:
        routes = [Route(tuple(r.channels),
                        tuple(msgfilter.expand_topic(t, topic_prefix) for t in r.topics),
                        tuple(msgfilter.expand_topic(t, topic_prefix) for t in r.exclude),
                        msgfilter.NameFilter(msgfilter.split_names(r.users),
                                             msgfilter.split_names(r.packages)))
                  for r in conf.routes]
        return cls(routes, conf.channels)

    @property
    def channels(self) -> list[str]:
        """Every channel the relay joins."""
        return list(dict.fromkeys([*self.default,
                                   *(c for r in self.routes for c in r.channels)]))

    @property
    def topics(self) -> tuple[str, ...]:
        """Topic prefixes worth subscribing to: those of the routes, or () (everything)
        when there are no routes or one takes every topic."""
        if not self.routes or any(not r.topics for r in self.routes):
            return ()
        return tuple(dict.fromkeys(t for r in self.routes for t in r.topics))

    def channels_for(self, envelope: Mapping[str, Any], index: TypeIndex) -> list[str]:
        if not self.routes:
            return list(self.default)
        chosen: dict[str, None] = {}
        for route in self.routes:
            if route.matches(envelope, index):
                chosen.update(dict.fromkeys(route.channels))
        return list(chosen)


def line(envelope: Mapping[str, Any], description: display.Description,
         max_bytes: int) -> str:
    """``<colour>topic-tail<reset> summary link`` in at most ``max_bytes`` UTF-8 bytes."""
    tail = display.safe(display.topic_tail(str(envelope.get("topic", ""))))
    service = tail.split(".", 1)[0]
    head = f"{COLOUR}{mirc_colour(service)}{_clip(tail, 80)}{RESET} "
    url = f" {description.url}" if description.url else ""
    budget = max_bytes - len(head.encode()) - len(url.encode())
    if budget < 20:  # no room for a summary beside the link: a cut link is wrong, drop it
        url = ""
        budget = max_bytes - len(head.encode())
    return head + _clip(description.summary, budget) + url


def _clip(text: str, max_bytes: int) -> str:
    """``text`` in at most ``max_bytes`` UTF-8 bytes, cut on a character with an ellipsis."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    room = max(0, max_bytes - len(ELLIPSIS.encode()))
    return data[:room].decode("utf-8", "ignore") + ELLIPSIS
