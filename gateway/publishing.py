"""What ``busgate publish`` (the shell) and ``busgate.publish()`` (Python) share.

Both turn a topic and bodies into lines of an ``events`` spool item (one
``Event.to_dict`` record per line) and refuse first what the spool worker would
refuse, so a refused message stores nothing: the topic's shape and grammar (and
the heartbeat's topic, which only the daemon sends), a body that is not a JSON
object or holds NaN/Infinity or nests past ``ingest.max_json_depth``, and a body
its message type's schema rejects (the type the registry finds for the topic).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from gateway import heartbeat, jsonbounds, topics
from gateway.errors import BusgateError, ParseError, SpoolError, TopicError
from gateway.messages import Message, MessageValidationError, TypeIndex
from gateway.spool import Spool

SHAPE = "<object>[.<subobject>].<event>"

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class MessageError(BusgateError, ValueError):
    """A message the bus cannot carry (body, key, size, usernames/packages, schema);
    nothing stored."""


class UnmarkedSpoolError(SpoolError):
    """The spool is not one a running daemon reads (no mark): the event would be lost."""


def check_tokens(service: str, tokens: list[str]) -> None:
    """The number of tokens after the service (2 or 3) and the reserved heartbeat topic.
    Needs no settings (``busgate publish --topic log`` is refused before any is read)."""
    if not 2 <= len(tokens) <= 3:
        raise TopicError(f"topic {'.'.join(tokens)!r}: expected {SHAPE} after the modname")
    if heartbeat.is_reserved(service, tokens):
        raise TopicError(f"{service}.{'.'.join(tokens)} is the publisher's heartbeat "
                         "topic, which only the daemon sends")


def split_topic(topic_prefix: str, topic: str, modname: str | None,
                default_modname: str | None = None) -> tuple[str, list[str]]:
    """``(service, [object, (subobject,) event])`` from a topic after ``modname`` or a
    full one with this bus's prefix; every check the worker makes on a topic."""
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a string, not {type(topic).__name__}")
    full = topic_prefix + "."
    if topic.startswith(full):
        service, *tokens = topic[len(full):].split(".")
        if modname is not None and modname != service:
            raise TopicError(f"topic {topic!r} is for service {service!r}, "
                             f"not modname {modname!r}")
    else:
        if topic.startswith("org.") and topic.count(".") >= 5:
            raise TopicError(f"topic {topic!r} does not start with this bus's prefix "
                             f"{full!r}; give {SHAPE} and a modname")
        service = modname if modname is not None else default_modname
        if service is None:
            raise TopicError("no modname: pass modname= (the service token) or a full "
                             f"topic starting with {full!r}")
        tokens = topic.split(".")
    check_tokens(service, tokens)
    topics.build(topic_prefix, service, *tokens)  # grammar and byte limit, as the worker
    return service, tokens


def encode_body(msg: Any, max_depth: int) -> str:
    """The body's compact JSON; :class:`MessageError` for what no envelope may carry."""
    if not isinstance(msg, Mapping):
        raise MessageError(f"msg must be a JSON object (a mapping), not {type(msg).__name__}")
    try:
        body = _encode(msg)
    except (ValueError, TypeError) as exc:  # NaN/Infinity, a circular reference, an object
        raise MessageError(f"msg is not JSON: {exc}") from None
    except RecursionError:
        raise MessageError(f"msg is nested deeper than ingest.max_json_depth "
                           f"({max_depth})") from None
    try:
        jsonbounds.check_depth(body, max_depth)
    except ParseError as exc:
        raise MessageError(f"msg: {exc} (ingest.max_json_depth)") from None
    return body


def message_type(index: TypeIndex, service: str, tokens: list[str]) -> type[Message]:
    return index.lookup((service, *tokens))


def validate_body(cls: type[Message], body: Any) -> None:
    """:class:`MessageError` naming the type and the failing place when the type's schema
    refuses ``body`` (what the worker would quarantine as ``invalid``)."""
    if cls is Message:
        return  # any JSON object: encode_body checked that
    try:
        cls(body).validate()
    except MessageValidationError as exc:
        raise MessageError(f"msg does not match its message type: {exc}") from None


def record_head(service: str, tokens: list[str], **fields: Any) -> str:
    """The start of a spool record (no ``key``, no ``body``, no closing brace); ``fields``
    adds ``time``, ``usernames``, ``packages`` when given."""
    record: dict[str, Any] = {"service": service, "object": tokens[0], "event": tokens[-1]}
    if len(tokens) == 3:
        record["subobject"] = tokens[1]
    record.update((name, value) for name, value in fields.items() if value)
    return _encode(record)[:-1]


def line(head: str, key: str, body: str) -> bytes:
    """One spool line: ``head`` (:func:`record_head`), the key and the encoded body."""
    return f'{head},"key":{_encode(key)},"body":{body}}}\n'.encode("utf-8", "surrogatepass")


def strings(values: Iterable[str], name: str) -> list[str]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise MessageError(f"{name} must be a list of strings")
    result = list(values)
    if not all(isinstance(v, str) for v in result):
        raise MessageError(f"{name} must be a list of strings")
    return result


def require_mark(spool: Spool) -> None:
    """:class:`UnmarkedSpoolError` unless a daemon reads this spool (nothing stored)."""
    if not spool.is_marked():
        from gateway.mark import unmarked_spool_message

        raise UnmarkedSpoolError(f"{unmarked_spool_message(spool.root)}; nothing stored")
