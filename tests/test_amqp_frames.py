"""busgate's publish frames are byte for byte what pamqp (aiormq's encoder) writes."""

from __future__ import annotations

import pamqp.frame
import pytest
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from gateway.transports import amqp_frames
from gateway.transports.amqp_wire import WireMessage


def pamqp_publish(channel: int, exchange: str, message: WireMessage, max_body: int) -> bytes:
    body = message.body
    frames = [spec.Basic.Publish(exchange=exchange, routing_key=message.routing_key,
                                 mandatory=True),
              ContentHeader(properties=spec.Basic.Properties(**message.properties()),
                            body_size=len(body))]
    frames += [ContentBody(body[i:i + max_body]) for i in range(0, len(body), max_body)]
    return b"".join(pamqp.frame.marshal(f, channel) for f in frames)


HEADERS = [
    {},
    {"fedora_messaging_schema": "busgate.dak.package.accept.v1", "sent-at":
     "2026-12-02T00:00:00+00:00", "fedora_messaging_user_zoé": True, "flag": False},
    {f"n{v}": v for v in (0, -1, 127, 128, -129, 32767, 32768, 65535, 65536, -40000,
                          2**31 - 1, 2**31, 2**32 - 1, 2**32, -2**40, 2**63 - 1)},
    {"severity": 40, "busgate_seq_id": 123456789, "ünïcode": "välue ✓"},
]


@pytest.mark.parametrize("headers", HEADERS)
@pytest.mark.parametrize("body", [b"{}", b'{"a":"' + b"x" * 5000 + b'"}'])
def test_same_bytes_as_pamqp(headers, body):
    message = WireMessage(routing_key="org.debian.dev.dak.package.accept", body=body,
                          message_id="2026-0b8e7c1e-8d40-5d6f-9f33-2f0c2e5d7d00",
                          headers=headers)
    for _ in range(2):  # the second time from the entry cache
        assert amqp_frames.publish(3, "amq.topic", message, 4088) == \
            pamqp_publish(3, "amq.topic", message, 4088)


@pytest.mark.parametrize("headers", [{"x": 1.5}, {"x": None}, {"x": [1]}, {"x": 2**64},
                                     {"k" * 256: "v"}])
def test_other_values_are_left_to_pamqp(headers):
    message = WireMessage(routing_key="t", body=b"{}", message_id="m", headers=headers)
    with pytest.raises(amqp_frames.Unsupported):
        amqp_frames.publish(1, "amq.topic", message, 4088)


def test_long_values_are_written_but_not_cached():
    """A signed message's busgate_envelope differs every time: same bytes as pamqp, and
    the entry cache keeps only values up to MAX_CACHED_VALUE characters."""
    amqp_frames._ENTRIES.clear()
    long_value = "s" * (amqp_frames.MAX_CACHED_VALUE + 1)
    for value in (long_value, "s" * amqp_frames.MAX_CACHED_VALUE):
        message = WireMessage(routing_key="t", body=b"{}", message_id="m",
                              headers={"busgate_envelope": value, "a": "b"})
        assert amqp_frames.publish(1, "amq.topic", message, 4088) == \
            pamqp_publish(1, "amq.topic", message, 4088)
    cached = {value for _, value, _ in amqp_frames._ENTRIES}
    assert cached == {"b", "s" * amqp_frames.MAX_CACHED_VALUE}
