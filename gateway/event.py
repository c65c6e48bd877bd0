"""The one thing adapters produce: a normalized event, before it gets an envelope."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway import topics
from gateway.errors import ParseError

#: The range of ``time`` (epoch seconds): 1970-01-01 to 9999-12-31 UTC, so a msg_id year
#: always has four digits and ``time.gmtime`` never overflows.
EARLIEST_TIME = 0
LATEST_TIME = 253402300799


@dataclass(frozen=True, slots=True)
class Event:
    """A source event, translated.

    ``key`` is what makes the event unique at its source (e.g.
    ``dak:accept:hebcal_4.31-1_source.changes:unstable``). The same key always
    gives the same ``msg_id``, and the outbox stores a key once, so a redelivered
    mail or a re-run poll publishes nothing new.
    """

    service: str
    object: str
    event: str
    key: str
    body: Mapping[str, Any]
    subobject: str | None = None
    usernames: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    #: When it happened at the source (epoch seconds); the msg_id year comes from it.
    time: float | None = None
    #: ``(namespace, subject, fact)`` rows written to ``source_facts`` when this event
    #: is first committed (e.g. ``("debbugs.mail", "1023456", "close")``), so another
    #: feed of the same source (the SOAP poller) can tell what was already reported.
    #: Set by in-process parsers only: never read from or written to spool records.
    facts: tuple[tuple[str, str, str], ...] = ()
    #: The parser proved ``body`` holds no float (:func:`gateway.jsonbounds.loads_flagged`),
    #: so its canonical JSON is orjson's, made without walking the body again. Set only
    #: by :meth:`from_dict` for a parsed spool record; not part of the event's identity,
    #: and not an init field, so ``dataclasses.replace(event, body=...)`` drops it.
    float_free: bool = field(default=False, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        topics.check_token(self.service, "service")
        topics.check_token(self.object, "object")
        if self.subobject is not None:
            topics.check_token(self.subobject, "subobject")
        topics.check_token(self.event, "event")
        if not isinstance(self.key, str) or not self.key:
            raise ParseError("an event needs a non-empty string key")
        if self.time is not None:
            _check_time(self.time)

    def topic_tokens(self) -> tuple[str, ...]:
        """``(service, object[, subobject], event)``."""
        middle = (self.subobject,) if self.subobject else ()
        return (self.service, self.object, *middle, self.event)

    def topic(self, topic_prefix: str) -> str:
        return topics.build(topic_prefix, *self.topic_tokens())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as written into spool ``events`` items."""
        data: dict[str, Any] = {
            "service": self.service,
            "object": self.object,
            "event": self.event,
            "key": self.key,
            "body": self.body,
        }
        if self.subobject:
            data["subobject"] = self.subobject
        if self.usernames:
            data["usernames"] = list(self.usernames)
        if self.packages:
            data["packages"] = list(self.packages)
        if self.time is not None:
            data["time"] = self.time
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, float_free: bool = False) -> Event:
        """Inverse of :meth:`to_dict`; raises :class:`ParseError` on a bad record.
        ``float_free``: the record was parsed by ``jsonbounds.loads_flagged``, which found
        no float in it."""
        if not isinstance(data, Mapping):
            raise ParseError(f"event record must be an object, got {type(data).__name__}")
        unknown = set(data) - _FIELDS
        if unknown:
            raise ParseError(f"event record has unknown fields: {', '.join(sorted(unknown))}")
        try:
            event = cls(
                service=data["service"],
                object=data["object"],
                event=data["event"],
                key=data["key"],
                body=data.get("body", {}),
                subobject=data.get("subobject"),
                usernames=_strings(data.get("usernames", ()), "usernames"),
                packages=_strings(data.get("packages", ()), "packages"),
                time=data.get("time"),
            )
        except KeyError as exc:
            raise ParseError(f"event record lacks field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ParseError(f"bad event record: {exc}") from None
        if float_free:
            object.__setattr__(event, "float_free", True)  # frozen: set once, here
        return event


def _check_time(value: object) -> None:
    """Type, finiteness and range of ``time``: a string, NaN or 1e300 must not reach
    ``gmtime`` (where it would stop the spool worker), nor the wire."""
    if type(value) not in (int, float):
        raise ParseError(f"time must be a number of epoch seconds, got {type(value).__name__}")
    if not math.isfinite(value) or not EARLIEST_TIME <= value <= LATEST_TIME:  # type: ignore[arg-type]
        raise ParseError(f"time {value!r} is outside {EARLIEST_TIME}..{LATEST_TIME} "
                         "(1970-9999 UTC)")


def _strings(values: object, name: str) -> tuple[str, ...]:
    if values == ():  # the usual case, kept cheap: this runs for every spooled event
        return ()
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise ParseError(f"{name} must be a list of strings")
    return tuple(values)


_FIELDS = {
    "service", "object", "event", "key", "body", "subobject", "usernames", "packages", "time",
}
