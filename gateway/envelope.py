"""The bus message: fedmsg-compatible envelope, canonical JSON, decoding.

Wire form on ZeroMQ is two frames ``[topic, json]``. The JSON is canonical
(sorted keys, compact separators, ASCII escapes) so that what is stored, sent,
replayed and signed is one byte string.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from gateway import topics
from gateway.errors import EnvelopeError, TopicError

#: Namespace for UUID5 msg_ids: the same event key always yields the same id.
MSG_ID_NAMESPACE = uuid.UUID("5d0c6f9e-3b7a-5d1e-9c59-627573676174")

REQUIRED_FIELDS = ("topic", "msg", "timestamp", "msg_id", "i", "username")
SIGNATURE_FIELDS = ("signature", "certificate")

_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical_json(value: Any) -> str:
    """The one canonical encoding (what fedmsg signs): sorted, compact, ASCII."""
    return _encoder.encode(value)


def msg_id_for(key: str, when: float | None = None) -> str:
    """``"<year>-<uuid5(key)>"``; the year is the source event's (UTC), else now."""
    moment = _dt.datetime.fromtimestamp(when, _dt.UTC) if when else _dt.datetime.now(_dt.UTC)
    return f"{moment.year}-{uuid.uuid5(MSG_ID_NAMESPACE, key)}"


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
    return envelope


def encode(envelope: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Two ZeroMQ frames for ``envelope``."""
    return envelope["topic"].encode(), canonical_json(envelope).encode()


def decode(frames: Sequence[bytes]) -> dict[str, Any]:
    """Validate two frames and return the envelope. Raises :class:`EnvelopeError`."""
    if len(frames) != 2:
        raise EnvelopeError(f"expected 2 frames [topic, json], got {len(frames)}")
    topic_frame, body = frames
    try:
        envelope = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
