"""The bus message: fedmsg-compatible envelope, canonical JSON, decoding.

Wire form on ZeroMQ is two frames ``[topic, json]``. The JSON is canonical
(sorted keys, compact separators, ASCII escapes) so that what is stored, sent,
replayed and signed is one byte string.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from gateway import canonical, jsonbounds, topics
from gateway.errors import EnvelopeError, ParseError, TopicError

#: Namespace for UUID5 msg_ids: the same event key always yields the same id.
MSG_ID_NAMESPACE = uuid.UUID("5d0c6f9e-3b7a-5d1e-9c59-627573676174")

REQUIRED_FIELDS = ("topic", "msg", "timestamp", "msg_id", "i", "username")
SIGNATURE_FIELDS = ("signature", "certificate")

#: ``allow_nan=False``: NaN/Infinity are not JSON, so no envelope may carry them.
_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                            allow_nan=False)


def canonical_json(value: Any) -> str:
    """The one canonical encoding (what fedmsg signs): sorted, compact, ASCII."""
    return _encoder.encode(value)


def msg_id_for(key: str, when: float | None = None) -> str:
    """``"<year>-<uuid5(key)>"``; the year is the source event's (UTC), else now."""
    return msg_id_from_uid(event_uid(key), when)


def msg_id_from_uid(uid: bytes, when: float | None = None) -> str:
    year = time.gmtime(when).tm_year  # gmtime(None) is now
    h = uid.hex()
    return f"{year}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_NAMESPACE_BYTES = MSG_ID_NAMESPACE.bytes


def event_uid(key: str) -> bytes:
    """The 16 bytes of ``uuid.uuid5(MSG_ID_NAMESPACE, key)``: an event's identity.

    Computed by hand because it runs for every event (a third of uuid5's cost).
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + key.encode(), usedforsecurity=False)
                       .digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return bytes(digest)


def uid_of_msg_id(msg_id: str) -> bytes:
    """Inverse of :func:`msg_id_for` (drops the year). Raises ValueError if malformed."""
    year, sep, rest = msg_id.partition("-")
    if not (sep and year.isdigit()):
        raise ValueError(f"msg_id {msg_id!r} is not <year>-<uuid>")
    return uuid.UUID(rest).bytes


def encode_unsigned(*, topic: str, body: Any, msg_id: str, timestamp: int, i: int,
                    username: str, seq_id: int, publisher: str,
                    publisher_epoch: str | None = None) -> str:
    """``canonical_json(build(...))`` for an unsigned envelope, without the dict round trip.

    The keys are written in sorted order by hand; a test holds it equal to the
    general path for every kind of body.
    """
    return (
        f'{{"i":{int(i)},"msg":{canonical.dumps(body)},"msg_id":{_encoder.encode(msg_id)},'
        f'"publisher":{_json_str(publisher)},'
        f'{_epoch_field(publisher_epoch)}"seq_id":{int(seq_id)},'
        f'"timestamp":{int(timestamp)},"topic":{_json_str(topic)},'
        f'"username":{_json_str(username)}}}'
    )


def _epoch_field(epoch: str | None) -> str:
    return "" if epoch is None else f'"publisher_epoch":{_json_str(epoch)},'


@functools.lru_cache(maxsize=1024)
def _json_str(value: str) -> str:
    return _encoder.encode(value)


def build(
    *,
    topic: str,
    body: Any,
    msg_id: str,
    timestamp: int,
    i: int,
    username: str,
    seq_id: int | None = None,
    publisher: str | None = None,
    publisher_epoch: str | None = None,
) -> dict[str, Any]:
    """Assemble the unsigned envelope; signing (``gateway.signing``) comes last."""
    envelope: dict[str, Any] = {
        "topic": topic,
        "msg": body,
        "timestamp": int(timestamp),
        "msg_id": msg_id,
        "i": i,
        "username": username,
    }
    if seq_id is not None:
        envelope["seq_id"] = seq_id
    if publisher is not None:
        envelope["publisher"] = publisher
    if publisher_epoch is not None:
        envelope["publisher_epoch"] = publisher_epoch
    return envelope


def encode(envelope: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Two ZeroMQ frames for ``envelope``."""
    return envelope["topic"].encode(), canonical_json(envelope).encode()


#: Deepest nesting a received envelope may have: a body of ``ingest.max_json_depth``
#: (64 by default) plus the envelope, with room for other publishers' settings.
MAX_RECEIVED_DEPTH = 256


def decode(frames: Sequence[bytes]) -> dict[str, Any]:
    """Validate two frames and return the envelope. Raises :class:`EnvelopeError`.

    Frames come from the network: NaN/Infinity and nesting past
    :data:`MAX_RECEIVED_DEPTH` are refused instead of crashing the subscriber."""
    if len(frames) != 2:
        raise EnvelopeError(f"expected 2 frames [topic, json], got {len(frames)}")
    topic_frame, body = frames
    try:
        envelope = jsonbounds.loads(body, MAX_RECEIVED_DEPTH)
    except (UnicodeDecodeError, json.JSONDecodeError, ParseError) as exc:
        raise EnvelopeError(f"frame 1 is not JSON: {exc}") from None
    return check(envelope, topic_frame)


def check(envelope: Any, topic_frame: bytes | None = None) -> dict[str, Any]:
    """Validate a decoded envelope (and frame 0, when given)."""
    if not isinstance(envelope, dict):
        raise EnvelopeError("envelope must be a JSON object")
    missing = [name for name in REQUIRED_FIELDS if name not in envelope]
    if missing:
        raise EnvelopeError(f"envelope lacks {', '.join(missing)}")
    topic = envelope["topic"]
    if not isinstance(topic, str):
        raise EnvelopeError("envelope topic must be a string")
    if topic_frame is not None and topic_frame != topic.encode():
        raise EnvelopeError("frame 0 topic differs from the envelope's topic")
    try:
        topics.validate(topic)
    except TopicError as exc:
        raise EnvelopeError(str(exc)) from None
    if type(envelope["timestamp"]) is not int:
        raise EnvelopeError("timestamp must be an integer")
    seq = envelope.get("seq_id")
    if seq is not None and (type(seq) is not int or seq < 1):
        raise EnvelopeError("seq_id must be a positive integer")
    return envelope
