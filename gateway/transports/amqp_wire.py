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

All headers are built in :func:`amqp_headers`, one place: a signature (issue 13)
travels by adding its fields there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway import messages

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
    if isinstance(stored, Mapping) and stored:
        result = dict(stored)
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
    if result.get(messages.SCHEMA_HEADER, messages.BASE_NAME) != messages.BASE_NAME:
        # A consumer without the schema package is told which one to install.
        result.setdefault(SCHEMA_PACKAGE_HEADER, SCHEMA_PACKAGE)
    for key, value in result.items():
        if not _plain_field(value):
            # An AMQP header is a scalar; anything else travels as its JSON text.
            result[key] = json.dumps(value, sort_keys=True, default=str)
    result[PRIORITY_HEADER] = PRIORITY
    if "seq_id" in envelope:
        result[SEQ_ID_HEADER] = envelope["seq_id"]
    if "publisher" in envelope:
        result[PUBLISHER_HEADER] = envelope["publisher"]
    if envelope.get("publisher_epoch"):
        result[EPOCH_HEADER] = envelope["publisher_epoch"]
    return result


def _plain_field(value: Any) -> bool:
    if isinstance(value, bool | str | float):
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
    callback serves both transports. Raises :class:`WireError` on a body that is not a
    JSON object."""
    try:
        msg = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"the body is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise WireError(f"the body is a JSON {type(msg).__name__}, not an object")
    head = {str(k): _plain(v) for k, v in (headers or {}).items()}
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


def _plain(value: Any) -> Any:
    """AMQP field values as JSON-able ones (the broker library may give bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value
