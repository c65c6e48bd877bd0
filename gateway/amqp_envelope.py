"""A (signed) envelope as an AMQP message and back, so an AMQP consumer can verify it.

fedora-messaging style on the wire: routing key = topic, body = ``msg`` as JSON,
AMQP headers = the envelope's ``headers`` object. Everything else the signature
covers (topic, timestamp, msg_id, i, username, seq_id, publisher,
publisher_epoch) and the signature fields themselves travel in one more header,
:data:`HEADER`, a canonical JSON string. :func:`from_amqp` rebuilds the exact
envelope, which :meth:`gateway.verify.Verifier.check` then accepts or refuses.
Stock fedora-messaging consumers ignore the extra header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway import envelope as env
from gateway import jsonbounds
from gateway.errors import EnvelopeError, ParseError

#: The AMQP header carrying the envelope's other fields and its signature.
HEADER = "busgate_envelope"
_HAS_HEADERS = "_headers"
#: Longest :data:`HEADER` value accepted, in bytes (fields plus a certificate).
MAX_HEADER_BYTES = 128 * 1024


def to_amqp(envelope: Mapping[str, Any]) -> tuple[str, bytes, dict[str, Any]]:
    """``(routing key, body, headers)`` for a stored envelope (signed or not)."""
    rest = {k: v for k, v in envelope.items() if k not in ("msg", "headers")}
    rest[_HAS_HEADERS] = "headers" in envelope  # an empty headers object is signed too
    headers = dict(envelope.get("headers") or {})
    headers[HEADER] = env.canonical_json(rest)
    return envelope["topic"], env.canonical_json(envelope["msg"]).encode(), headers


def from_amqp(routing_key: str, body: bytes, headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The envelope an AMQP delivery carries. Raises :class:`EnvelopeError` when it is not
    one of busgate's (no or bad :data:`HEADER`, routing key and topic differ)."""
    headers = dict(headers or {})
    fields = headers.pop(HEADER, None)
    if isinstance(fields, bytes):
        fields = fields.decode("utf-8", "replace")
    if not isinstance(fields, str):
        raise EnvelopeError(f"no {HEADER} header: not a busgate envelope")
    if len(fields.encode()) > MAX_HEADER_BYTES:
        raise EnvelopeError(f"{HEADER} header over {MAX_HEADER_BYTES} bytes")
    try:
        rest = jsonbounds.loads(fields.encode(), env.MAX_RECEIVED_DEPTH)
        msg = jsonbounds.loads(body, env.MAX_RECEIVED_DEPTH)
    except (UnicodeDecodeError, json.JSONDecodeError, ParseError) as exc:
        raise EnvelopeError(f"not JSON: {exc}") from None
    if not isinstance(rest, dict) or "msg" in rest or "headers" in rest:
        raise EnvelopeError(f"{HEADER} header is not the envelope's other fields")
    has_headers = rest.pop(_HAS_HEADERS, bool(headers))
    envelope = {**rest, "msg": msg}
    if has_headers:
        envelope["headers"] = headers
    return env.check(envelope, routing_key.encode())
