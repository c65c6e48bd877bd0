"""A stored envelope as an AMQP message in fedora-messaging's wire format, and back.

Pure mapping, no broker library: the AMQP transport, the consumer side and the
benchmark share it, and the tests check it without a socket.

Publish side (fedora-messaging 3.x, ``Message._build_properties``): routing key =
the full topic, body = the event body alone (a JSON object), ``content_type``
``application/json``, ``content_encoding`` ``utf-8``, ``delivery_mode`` 2,
``message_id`` = busgate's ``msg_id`` (stable, so a resend after a broker failure
can be deduplicated by whoever consumes), ``priority``; headers = the envelope's
``headers`` (type name, severity, ``sent-at`` from the outbox timestamp, one filter
key per user and package) plus ``priority``, ``busgate_seq_id`` and
``busgate_publisher``.

All headers are built in :func:`amqp_headers`, one place. A signed envelope
(``crypto``/``signature`` set) also gets :data:`ENVELOPE_HEADER`: the canonical JSON
of the signed fields nothing else on the wire carries (``timestamp``, ``i``,
``username``, ``crypto``, ``signature``, ``certificate``, any other field) and how
to read its ``headers`` back. :func:`from_amqp` then rebuilds the exact signed
envelope from what an AMQP consumer can see (routing key = ``topic``, body = ``msg``,
``message_id`` = ``msg_id``, the ``busgate_*`` headers, the other headers =
``headers``), so a changed routing key, id, body or header breaks the signature that
:meth:`gateway.verify.Verifier.check` verifies. Stock fedora-messaging consumers
ignore the extra header; unsigned messages do not carry it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway import envelope as env
from gateway import jsonbounds, messages
from gateway.errors import EnvelopeError, ParseError

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
#: Persistent: a durable queue keeps the message across a broker restart.
DELIVERY_MODE = 2
#: fedora-messaging's default priority (its ``publish_priority`` unset is sent as 0).
PRIORITY = 0
SEQ_ID_HEADER = "busgate_seq_id"
PUBLISHER_HEADER = "busgate_publisher"
EPOCH_HEADER = "busgate_publisher_epoch"
#: fedora-messaging's header naming the distribution of the schema class (normalised),
#: which its consumer names in the warning when the class is not installed.
SCHEMA_PACKAGE_HEADER = "fedora_messaging_schema_package"
SCHEMA_PACKAGE = "busgate_messages"
#: fedora-messaging mirrors the priority into the headers.
PRIORITY_HEADER = "priority"
#: A signed envelope's fields that travel nowhere else, and its signature.
ENVELOPE_HEADER = "busgate_envelope"
#: Longest :data:`ENVELOPE_HEADER` value accepted from the wire, in bytes (the fields
#: plus an X.509 certificate are a few KiB; refused before it is parsed).
MAX_ENVELOPE_HEADER_BYTES = 128 * 1024
#: Header names the transport writes itself: never part of a signed envelope's
#: ``headers`` unless :data:`ENVELOPE_HEADER` says so (``own``).
TRANSPORT_HEADERS = frozenset({PRIORITY_HEADER, SEQ_ID_HEADER, PUBLISHER_HEADER,
                               EPOCH_HEADER, SCHEMA_PACKAGE_HEADER, ENVELOPE_HEADER})
#: Envelope fields carried by a header of their own (when of the header's type).
_SLOTS = ((SEQ_ID_HEADER, "seq_id", int), (PUBLISHER_HEADER, "publisher", str),
          (EPOCH_HEADER, "publisher_epoch", str))
_HEADERS_KEY = "_headers"

#: ``lookup(topic tokens after org.<d>.<env>) -> Message type``: computes the headers of
#: an envelope stored before envelopes carried them.
TypeLookup = Callable[[tuple[str, ...]], type[messages.Message]]


@dataclass(frozen=True)
class WireMessage:
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any]

    def properties(self) -> dict[str, Any]:
        """AMQP basic properties (names as in pamqp/pika)."""
        return {"content_type": CONTENT_TYPE, "content_encoding": CONTENT_ENCODING,
                "delivery_mode": DELIVERY_MODE, "message_id": self.message_id,
                "priority": PRIORITY, "headers": self.headers}


def amqp_headers(envelope: Mapping[str, Any], lookup: TypeLookup | None = None,
                 prefix_tokens: int = 3) -> dict[str, Any]:
    """The AMQP headers of a stored envelope (the one place they are made)."""
    stored = envelope.get("headers")
    signed = "signature" in envelope or "crypto" in envelope
    if isinstance(stored, Mapping) and (stored or signed):
        result = dict(stored)
    elif signed:  # never computed: what the signature covers is what travels
        result = {}
    else:
        # An envelope from before envelopes carried headers: compute them as the
        # envelope factory would now.
        topic = str(envelope.get("topic", ""))
        cls = lookup(tuple(topic.split(".")[prefix_tokens:])) if lookup else messages.Message
        body = envelope.get("msg")
        try:
            result = messages.headers(cls(body, topic=topic), int(envelope.get("timestamp", 0)))
        except Exception:  # a type's property failing on an odd old body: keep the basics
            result = messages.headers(messages.Message(body, topic=topic),
                                      int(envelope.get("timestamp", 0)))
            result[messages.SCHEMA_HEADER] = cls.name
    own = {k: result[k] for k in TRANSPORT_HEADERS.intersection(result)} if signed else {}
    if result.get(messages.SCHEMA_HEADER, messages.BASE_NAME) != messages.BASE_NAME:
        # A consumer without the schema package is told which one to install.
        result.setdefault(SCHEMA_PACKAGE_HEADER, SCHEMA_PACKAGE)
    as_json = []
    for key, value in result.items():
        if not _plain_field(value):
            # An AMQP header is a scalar; anything else travels as its JSON text.
            result[key] = json.dumps(value, sort_keys=True, default=str)
            as_json.append(key)
    result[PRIORITY_HEADER] = PRIORITY
    for header, field, kind in _SLOTS:
        value = envelope.get(field)
        if _fits(value, kind):
            result[header] = value
    if signed:
        result[ENVELOPE_HEADER] = _envelope_header(envelope, own, as_json)
    return result


def _envelope_header(envelope: Mapping[str, Any], own: dict[str, Any],
                     as_json: list[str]) -> str:
    """:data:`ENVELOPE_HEADER` of a signed envelope: every field but ``msg``, ``headers``,
    ``topic``, a ``msg_id`` string and the slot fields, and ``_headers`` (absent: the
    envelope has none) saying which header values are JSON text (``json``) and the
    envelope's own value of a header name the transport uses (``own``)."""
    rest = {k: v for k, v in envelope.items() if k not in ("msg", "headers", "topic")}
    if isinstance(rest.get("msg_id"), str):
        del rest["msg_id"]
    for _, field, kind in _SLOTS:
        if _fits(rest.get(field), kind):
            del rest[field]
    if "headers" in envelope:
        marker: dict[str, Any] = {}
        if as_json:
            marker["json"] = sorted(k for k in as_json if k not in own)
        if own:
            marker["own"] = own
        rest[_HEADERS_KEY] = marker
    return env.canonical_json(rest)


def _fits(value: Any, kind: type) -> bool:
    """Whether a slot field's value travels in its header and comes back equal."""
    return type(value) is kind and (kind is not int or _plain_field(value))


def _plain_field(value: Any) -> bool:
    """Whether a header value travels as itself and comes back equal (pamqp writes a
    float as a 32-bit one: it travels as JSON text)."""
    if isinstance(value, bool | str):
        return True
    return isinstance(value, int) and -2**63 <= value < 2**63


def to_amqp(envelope: Mapping[str, Any], lookup: TypeLookup | None = None) -> WireMessage:
    """The AMQP message of a stored envelope (its JSON already parsed)."""
    body = json.dumps(envelope.get("msg"), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode()
    return WireMessage(routing_key=str(envelope["topic"]), body=body,
                       message_id=str(envelope["msg_id"]),
                       headers=amqp_headers(envelope, lookup))


class WireError(ValueError):
    """A received AMQP message that is not a busgate/fedora-messaging message."""


def from_amqp(routing_key: str, body: bytes, message_id: str | None,
              headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """A received AMQP message as an envelope (what ZeroMQ subscribers get), so one
    callback serves both transports: the exact signed envelope when the message
    carries :data:`ENVELOPE_HEADER`, else one put together from the headers. Raises
    :class:`WireError` on a body that is not a JSON object, a bad envelope header or
    a rebuilt envelope that is not an envelope."""
    try:
        msg = jsonbounds.loads(body, env.MAX_RECEIVED_DEPTH)
    except (UnicodeDecodeError, ValueError, ParseError) as exc:
        raise WireError(f"the body is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise WireError(f"the body is a JSON {type(msg).__name__}, not an object")
    head = {str(k): _plain(v) for k, v in (headers or {}).items()}
    if ENVELOPE_HEADER in head:
        return _signed_envelope(routing_key, msg, message_id, head)
    envelope: dict[str, Any] = {"topic": routing_key, "msg": msg, "msg_id": message_id,
                                "headers": head}
    sent_at = head.get(messages.SENT_AT_HEADER)
    if isinstance(sent_at, str):
        with contextlib.suppress(ValueError):
            envelope["timestamp"] = int(dt.datetime.fromisoformat(sent_at).timestamp())
    if isinstance(head.get(SEQ_ID_HEADER), int):
        envelope["seq_id"] = head[SEQ_ID_HEADER]
    if isinstance(head.get(PUBLISHER_HEADER), str):
        envelope["publisher"] = head[PUBLISHER_HEADER]
    if isinstance(head.get(EPOCH_HEADER), str):
        envelope["publisher_epoch"] = head[EPOCH_HEADER]
    return envelope


def _signed_envelope(routing_key: str, msg: dict[str, Any], message_id: str | None,
                     head: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`amqp_headers` for a message with :data:`ENVELOPE_HEADER`."""
    text = head.pop(ENVELOPE_HEADER)
    if not isinstance(text, str):
        raise WireError(f"the {ENVELOPE_HEADER} header is not a string")
    if len(text) > MAX_ENVELOPE_HEADER_BYTES or \
            len(text.encode()) > MAX_ENVELOPE_HEADER_BYTES:
        raise WireError(f"the {ENVELOPE_HEADER} header is over {MAX_ENVELOPE_HEADER_BYTES} "
                        "bytes")
    try:
        rest = jsonbounds.loads(text, env.MAX_RECEIVED_DEPTH)
    except (ValueError, ParseError) as exc:
        raise WireError(f"the {ENVELOPE_HEADER} header is not JSON: {exc}") from None
    if not isinstance(rest, dict) or not {"msg", "headers", "topic"}.isdisjoint(rest):
        raise WireError(f"the {ENVELOPE_HEADER} header is not an envelope's other fields")
    marker = rest.pop(_HEADERS_KEY, None)
    envelope = {**rest, "topic": routing_key, "msg": msg}
    if isinstance(message_id, str) and "msg_id" not in rest:
        envelope["msg_id"] = message_id
    for header, field, _ in _SLOTS:
        if header in head:
            if field in rest:
                raise WireError(f"{field} is both in the {header} header and in "
                                f"{ENVELOPE_HEADER}")
            envelope[field] = head[header]
    if marker is not None:
        if not isinstance(marker, dict) or not isinstance(marker.get("json", []), list) \
                or not isinstance(marker.get("own", {}), dict):
            raise WireError(f"the {ENVELOPE_HEADER} header's {_HEADERS_KEY} is malformed")
        stored = {k: v for k, v in head.items() if k not in TRANSPORT_HEADERS}
        for key in marker.get("json", []):
            if isinstance(stored.get(key), str):
                try:
                    stored[key] = jsonbounds.loads(stored[key], env.MAX_RECEIVED_DEPTH)
                except (ValueError, ParseError):
                    raise WireError(f"header {str(key)[:80]!r} is not JSON") from None
        stored.update(marker.get("own", {}))
        envelope["headers"] = stored
    try:
        return env.check(envelope)
    except EnvelopeError as exc:
        raise WireError(str(exc)) from None


def _plain(value: Any) -> Any:
    """AMQP field values as JSON-able ones (the broker library may give bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value
