"""The AMQP 0-9-1 frames of one ``basic.publish`` of a busgate message, as bytes.

pamqp (under aiormq) encodes a content header through a generic, per-field path
that costs more than everything else busgate does per message; busgate's messages
always carry the same property set (``content_type``, ``content_encoding``,
``headers``, ``delivery_mode``, ``priority``, ``message_id``) and headers of strings,
booleans and integers, so this module writes those frames directly, choosing the
same encodings pamqp does (tests/test_amqp_frames.py checks the bytes are equal).
Anything else raises :class:`Unsupported` and the caller falls back to pamqp.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from gateway.transports.amqp_wire import WireMessage

_FRAME = struct.Struct(">BHI")
_FRAME_END = b"\xce"
METHOD, HEADER, BODY = 1, 2, 3
#: Basic (class 60) Publish (method 40), reserved ticket 0.
_PUBLISH = struct.pack(">HHH", 60, 40, 0)
#: content_type, content_encoding, headers, delivery_mode, priority, message_id.
_FLAGS = 0x8000 | 0x4000 | 0x2000 | 0x1000 | 0x0800 | 0x0080
_HEADER = struct.Struct(">HHQH")
_U32 = struct.Struct(">I")
_INTS = ((-128, 127, b"b", struct.Struct(">b")), (-32768, 32767, b"s", struct.Struct(">h")),
         (0, 65535, b"u", struct.Struct(">H")),
         (-2147483648, 2147483647, b"I", struct.Struct(">i")),
         (0, 4294967295, b"i", struct.Struct(">I")),
         (-9223372036854775808, 9223372036854775807, b"l", struct.Struct(">q")))


class Unsupported(ValueError):
    """A message this encoder does not write (the caller uses pamqp for it)."""


def publish(channel: int, exchange: str, message: WireMessage, max_body: int,
            *, mandatory: bool = True) -> bytes:
    """Method, content header and body frames of one publish."""
    props = message.properties()
    if set(props) != {"content_type", "content_encoding", "delivery_mode", "message_id",
                      "priority", "headers"}:
        raise Unsupported("an unexpected property set")
    method = (_PUBLISH + _short(exchange) + _short(message.routing_key)
              + (b"\x01" if mandatory else b"\x00"))
    body = message.body
    header = (_HEADER.pack(60, 0, len(body), _FLAGS) + _short(props["content_type"])
              + _short(props["content_encoding"]) + _table(props["headers"])
              + _octet(props["delivery_mode"]) + _octet(props["priority"])
              + _short(props["message_id"]))
    parts = [_frame(METHOD, channel, method), _frame(HEADER, channel, header)]
    for start in range(0, len(body), max_body):
        parts.append(_frame(BODY, channel, body[start:start + max_body]))
    return b"".join(parts)


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME.pack(kind, channel, len(payload)) + payload + _FRAME_END


def _short(text: str) -> bytes:
    if not isinstance(text, str):
        raise Unsupported("a short string that is not a string")
    data = text.encode()
    if len(data) > 255:
        raise Unsupported("a short string over 255 bytes")
    return bytes((len(data),)) + data


def _octet(value: Any) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise Unsupported("an octet out of range")
    return bytes((value,))


#: Encoded table entries and keys seen before (header names, type names, publisher and
#: epoch repeat in every message); bounded, emptied when full.
_ENTRIES: dict[tuple[str, Any, type], bytes] = {}
_KEYS: dict[str, bytes] = {}
MAX_CACHED = 4096
#: Longest string header value cached (longer ones, such as a signed envelope's
#: ``busgate_envelope``, differ in every message and would only churn the cache).
MAX_CACHED_VALUE = 256


def _table(table: Mapping[str, Any]) -> bytes:
    parts = []
    for key, value in sorted(table.items()):  # pamqp writes a table's keys sorted
        kind = type(value)
        if kind is int:  # seq_id: new each time, the key is not
            name = _KEYS.get(key)
            if name is None:
                name = _short(key)
                if len(_KEYS) >= MAX_CACHED:
                    _KEYS.clear()
                _KEYS[key] = name
            parts.append(name + _integer(value))
            continue
        if kind is not str and kind is not bool:
            raise Unsupported(f"a header value of type {kind.__name__}")
        if kind is str and len(value) > MAX_CACHED_VALUE:  # a signature: new each time
            parts.append(_short(key) + _value(value))
            continue
        entry = _ENTRIES.get((key, value, kind))
        if entry is None:
            entry = _short(key) + _value(value)
            if len(_ENTRIES) >= MAX_CACHED:
                _ENTRIES.clear()
            _ENTRIES[(key, value, kind)] = entry
        parts.append(entry)
    data = b"".join(parts)
    return _U32.pack(len(data)) + data


def _value(value: Any) -> bytes:
    if isinstance(value, bool):
        return b"t\x01" if value else b"t\x00"
    if isinstance(value, int):
        return _integer(value)
    if isinstance(value, str):
        data = value.encode()
        return b"S" + _U32.pack(len(data)) + data
    raise Unsupported(f"a header value of type {type(value).__name__}")


def _integer(value: int) -> bytes:
    for low, high, code, packer in _INTS:
        if low <= value <= high:
            return code + packer.pack(value)
    raise Unsupported("an integer out of range")
