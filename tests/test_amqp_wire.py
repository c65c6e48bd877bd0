"""The AMQP mapping without a broker: envelope -> fedora-messaging wire and back, the
[amqp] settings and their checks."""

from __future__ import annotations

import json

import pytest
from amqp_types import BuildType, UploadType

from gateway import config, messages
from gateway.errors import ConfigError
from gateway.messages import TypeIndex
from gateway.transports.amqp import broker_url, redacted
from gateway.transports.amqp_wire import WireError, from_amqp, to_amqp

INDEX = TypeIndex([UploadType, BuildType])


def envelope(**extra):
    return {"topic": "org.debian.dev.amqptest.package.upload", "msg_id": "2026-abc",
            "msg": {"source": "hebcal", "version": "4.31-1", "by": "barak"},
            "timestamp": 1764633600, "seq_id": 7, "publisher": "gw1",
            "publisher_epoch": "e" * 32, "i": 1, "username": "busgate", **extra}


def test_headers_computed_for_an_envelope_without_them():
    wire = to_amqp(envelope(), INDEX.lookup)
    assert wire.routing_key == "org.debian.dev.amqptest.package.upload"
    assert json.loads(wire.body) == envelope()["msg"]
    assert wire.message_id == "2026-abc"
    assert wire.headers == {
        "fedora_messaging_schema": "busgate.amqptest.package.upload.v1",
        "fedora_messaging_schema_package": "busgate_messages",
        "fedora_messaging_severity": 20, "sent-at": "2025-12-02T00:00:00+00:00",
        "fedora_messaging_user_barak": True, "busgate_package_hebcal": True,
        "priority": 0, "busgate_seq_id": 7, "busgate_publisher": "gw1",
        "busgate_publisher_epoch": "e" * 32}
    props = wire.properties()
    assert (props["content_type"], props["content_encoding"], props["delivery_mode"],
            props["message_id"], props["priority"]) == ("application/json", "utf-8", 2,
                                                        "2026-abc", 0)


def test_stored_headers_are_used_as_they_are():
    stored = {"fedora_messaging_schema": "x.y.v1", "fedora_messaging_severity": 40,
              "sent-at": "2026-01-01T00:00:00+00:00"}
    wire = to_amqp(envelope(headers=stored), INDEX.lookup)
    assert {k: wire.headers[k] for k in stored} == stored
    assert "fedora_messaging_user_barak" not in wire.headers  # not recomputed
    assert wire.headers["busgate_seq_id"] == 7


def test_header_values_that_are_not_scalars_travel_as_json():
    stored = {"fedora_messaging_schema": "x.v1", "odd": {"a": [1]}, "huge": 2**70,
              "none": None}
    wire = to_amqp(envelope(headers=stored))
    assert (wire.headers["odd"], wire.headers["huge"], wire.headers["none"]) == (
        '{"a": [1]}', str(2**70), "null")


def test_unknown_topic_is_base_message_and_a_failing_type_keeps_the_basics():
    wire = to_amqp(envelope(topic="org.debian.dev.nobody.claims.this"), INDEX.lookup)
    assert wire.headers["fedora_messaging_schema"] == messages.BASE_NAME
    assert "fedora_messaging_schema_package" not in wire.headers  # fedora-messaging's own
    odd = envelope(msg={"not": "an upload"})  # UploadType.summary etc. would fail
    wire = to_amqp(odd, INDEX.lookup)
    assert wire.headers["fedora_messaging_schema"] == UploadType.name
    assert wire.headers["busgate_seq_id"] == 7


def test_received_message_back_to_an_envelope():
    wire = to_amqp(envelope(), INDEX.lookup)
    back = from_amqp(wire.routing_key, wire.body, wire.message_id, wire.headers)
    assert back["topic"] == envelope()["topic"] and back["msg"] == envelope()["msg"]
    assert (back["msg_id"], back["seq_id"], back["publisher"], back["timestamp"]) == (
        "2026-abc", 7, "gw1", 1764633600)
    assert INDEX.for_envelope(back).summary == "hebcal 4.31-1 uploaded by barak"
    with pytest.raises(WireError, match="not an object"):
        from_amqp("t", b"[1, 2]", "x", {})
    with pytest.raises(WireError, match="not JSON"):
        from_amqp("t", b"\xff{", "x", {})


def test_broker_url_vhost_heartbeat_and_redaction():
    conf = config.AmqpSettings(url="amqps://u:secret@broker:5671/", vhost="a/b", heartbeat=30)
    assert broker_url(conf) == "amqps://u:secret@broker:5671/a%2Fb?heartbeat=30"
    assert "secret" not in redacted(broker_url(conf))
    assert broker_url(config.AmqpSettings()).startswith("amqp://guest:guest@127.0.0.1:5672/%2F")


@pytest.mark.parametrize(("table", "key"), [
    ({"url": "http://broker/"}, "amqp.url"),
    ({"confirm_window": 0}, "amqp.confirm_window"),
    ({"reconnect_min": 5.0, "reconnect_max": 1.0}, "amqp.reconnect_max"),
    ({"exchange": ""}, "amqp.exchange"),
    ({"unroutable_queue": "q" * 256}, "amqp.unroutable_queue"),
    ({"max_message_bytes": 0}, "amqp.max_message_bytes"),
    ({"prefetch": -1}, "amqp.prefetch"),
    ({"heartbeat": 70000}, "amqp.heartbeat"),
    ({"tls_ca_file": "/etc/hosts"}, "amqp.tls_ca_file"),  # amqp://: no TLS
    ({"url": "amqps://b/", "enabled": True, "tls_ca_file": "/nonexistent/ca.pem"},
     "amqp.tls_ca_file"),
    ({"url": "amqps://b/", "tls_key_file": "/etc/hosts"}, "amqp.tls_key_file"),
])
def test_bad_amqp_settings_are_refused(make_settings, table, key):
    with pytest.raises(ConfigError) as err:
        make_settings(amqp=table)
    assert err.value.key == key


def test_tls_context_for_amqps(tmp_path):
    import ssl

    from gateway.transports.amqp import tls_context

    assert tls_context(config.AmqpSettings()) is None
    context = tls_context(config.AmqpSettings(url="amqps://broker/"))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    with pytest.raises(OSError):
        tls_context(config.AmqpSettings(url="amqps://broker/",
                                        tls_ca_file=str(tmp_path / "missing.pem")))


def test_amqp_settings_documented():
    """Every [amqp] key is in conf/busgate.toml (and that file loads)."""
    from conftest import REPO

    loaded = config.load(REPO / "conf" / "busgate.toml")
    text = (REPO / "conf" / "busgate.toml").read_text()
    section = text[text.index("[amqp]"):]
    section = section[:section.index("\n[", 1)]
    for field in config.AmqpSettings.__dataclass_fields__:
        assert f"\n{field} = " in section, field
    assert loaded.amqp == config.AmqpSettings()
