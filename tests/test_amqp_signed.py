"""Signed messages on AMQP: the signature and every signed field travel in the message
(routing key, body, message_id, headers), an AMQP consumer rebuilds the exact signed
envelope and verifies it; tampered, unsigned or out-of-policy messages are rejected
without requeue and counted by reason. The mapping is checked without a broker first,
then through ``busgate run``, a real RabbitMQ and ``busgate tail --amqp``."""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from typing import Any

import pytest
from amqp_helpers import amqp_settings, bind_queue, channel, drain
from conftest import BUSGATE, REPO
from signing_helpers import TOPIC, Pki, envelope, make_pki

from gateway import envelope as env
from gateway import runtime, verify
from gateway.signing import OpenPGPSigner, X509Signer
from gateway.transports import amqp_wire
from gateway.transports.amqp_wire import (
    ENVELOPE_HEADER,
    MAX_ENVELOPE_HEADER_BYTES,
    WireError,
    from_amqp,
    to_amqp,
)
from gateway.verify import SignatureError, Verifier


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def signers(pki: Pki) -> dict[str, Any]:
    return {"x509": X509Signer(str(pki.cert), str(pki.key)),
            "openpgp": OpenPGPSigner(str(pki.pgp_key))}


@pytest.fixture(scope="module")
def verifier(pki: Pki) -> Verifier:
    return Verifier(ca=str(pki.ca), crl=str(pki.crl), keyring=[str(pki.keyring)],
                    routing_policy=str(pki.policy))


def stored(item: dict[str, Any]) -> dict[str, Any]:
    """The envelope as the outbox holds it (canonical JSON, parsed again)."""
    return json.loads(env.canonical_json(item))


def received(wire: amqp_wire.WireMessage, **change: Any) -> dict[str, Any]:
    """What a consumer rebuilds from ``wire`` (headers deep-copied, as off the wire)."""
    parts = {"routing_key": wire.routing_key, "body": wire.body,
             "message_id": wire.message_id, "headers": copy.deepcopy(wire.headers), **change}
    return from_amqp(**parts)


@pytest.mark.parametrize("backend", ["x509", "openpgp"])
def test_signed_envelope_round_trips_exactly_and_verifies(backend, signers, verifier):
    signer = signers[backend]
    odd_headers = {**envelope()["headers"], "odd": {"a": [1, None]}, "ratio": 0.1,
                   "huge": 2**70, "priority": 5, "fedora_messaging_schema_package": "x"}
    cases = [envelope(), {k: v for k, v in envelope().items() if k != "headers"},
             {**envelope(), "headers": {}}, {**envelope(), "headers": odd_headers},
             {**envelope(), "publisher_epoch": "", "extra": [1, {"b": 2}]}]
    for case in cases:
        signed = stored(signer.sign(case))
        wire = to_amqp(signed)
        assert wire.routing_key == TOPIC and json.loads(wire.body) == signed["msg"]
        assert wire.message_id == signed["msg_id"]
        back = received(wire)
        assert back == signed
        assert verifier.check(back)
    # what a stock consumer sees is the envelope's own headers, plus the transport's
    wire = to_amqp(stored(signer.sign(envelope())))
    assert wire.headers["fedora_messaging_severity"] == 20
    assert wire.headers["busgate_seq_id"] == 7 and wire.headers["busgate_publisher"] == "busgate"
    carried = json.loads(wire.headers[ENVELOPE_HEADER])
    assert carried["crypto"] == backend and carried["signature"]
    assert not {"msg", "topic", "msg_id", "seq_id", "publisher", "headers"} & set(carried)


def test_unsigned_messages_carry_no_envelope_header():
    wire = to_amqp(stored(envelope()))
    assert ENVELOPE_HEADER not in wire.headers
    back = received(wire)
    assert "crypto" not in back and "signature" not in back


@pytest.mark.parametrize("backend", ["x509", "openpgp"])
def test_anything_changed_on_the_wire_is_refused(backend, signers, verifier):
    wire = to_amqp(stored(signers[backend].sign(envelope())))
    head = wire.headers
    carried = json.loads(head[ENVELOPE_HEADER])

    def with_carried(**change: Any) -> dict[str, Any]:
        return {**head, ENVELOPE_HEADER: env.canonical_json({**carried, **change})}

    without_user = {k: v for k, v in head.items() if k != "fedora_messaging_user_dak"}
    tampered = {
        "header value": {"headers": {**head, "fedora_messaging_severity": 40}},
        "header added": {"headers": {**head, "fedora_messaging_user_mallory": True}},
        "header removed": {"headers": without_user},
        "body": {"body": wire.body.replace(b"hebcal", b"hebcaL")},
        "routing key": {"routing_key": "org.debian.dev.dak.upload.rejected"},
        "message id": {"message_id": "2026-00000000-0000-5000-8000-000000000000"},
        "seq_id": {"headers": {**head, "busgate_seq_id": 8}},
        "publisher": {"headers": {**head, "busgate_publisher": "mallory"}},
        "timestamp": {"headers": with_carried(timestamp=carried["timestamp"] - 1)},
        "field added": {"headers": with_carried(extra=1)},
        "i": {"headers": with_carried(i=8)},
    }
    for what, change in tampered.items():
        with pytest.raises(SignatureError, match="bad-signature"):
            verifier.check(received(wire, **change))
            pytest.fail(what)
    unsigned = {k: v for k, v in head.items() if k != ENVELOPE_HEADER}
    with pytest.raises(SignatureError, match="unsigned"):
        verifier.check(received(wire, headers=unsigned))
    stripped = {k: v for k, v in carried.items() if k != "signature"}
    with pytest.raises(SignatureError, match="malformed"):
        verifier.check(received(wire, headers={**head, ENVELOPE_HEADER:
                                               env.canonical_json(stripped)}))


def test_bad_envelope_headers_are_wire_errors(signers):
    wire = to_amqp(stored(signers["x509"].sign(envelope())))
    head = wire.headers
    bad = {
        "not JSON": "{",
        "not an object": "[1]",
        "holds the body": env.canonical_json({"msg": {}}),
        "too deep": "[" * 300 + "]" * 300,
        "seq_id twice": env.canonical_json({**json.loads(head[ENVELOPE_HEADER]),
                                            "seq_id": 7}),
        "malformed _headers": env.canonical_json({**json.loads(head[ENVELOPE_HEADER]),
                                                  "_headers": [1]}),
        "over the bound": " " * (MAX_ENVELOPE_HEADER_BYTES + 1),
    }
    for what, text in bad.items():
        with pytest.raises(WireError):
            received(wire, headers={**head, ENVELOPE_HEADER: text})
            pytest.fail(what)
    with pytest.raises(WireError, match="lacks timestamp"):
        carried = json.loads(head[ENVELOPE_HEADER])
        del carried["timestamp"]
        received(wire, headers={**head, ENVELOPE_HEADER: env.canonical_json(carried)})
    with pytest.raises(WireError, match="not JSON"):
        received(wire, body=b"[" * 100_000)


# -- against RabbitMQ --------------------------------------------------------------------

def _signing(pki: Pki, backend: str) -> dict[str, Any]:
    table = {"backend": backend, "ca": str(pki.ca), "crl": str(pki.crl),
             "keyring": [str(pki.keyring)], "routing_policy": str(pki.policy),
             "routing_nitpicky": True}
    if backend == "x509":
        return table | {"cert": str(pki.cert), "key": str(pki.key)}
    return table | {"key": str(pki.pgp_key)}


def _publish_raw(vhost: str, routing_key: str, body: bytes, props: dict[str, Any]) -> None:
    """A message straight onto the queue's exchange (pika), as an attacker with
    publish rights on the broker could."""
    import pika

    ch = channel(vhost)
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", routing_key, body, pika.BasicProperties(**props),
                     mandatory=True)
    ch.connection.close()


def _properties(props: Any) -> dict[str, Any]:
    """pika properties as keyword arguments (what busgate sent)."""
    return {"content_type": props.content_type, "content_encoding": props.content_encoding,
            "delivery_mode": 2, "message_id": props.message_id, "priority": 0,
            "headers": dict(props.headers)}


def _tampered_copies(props: Any, body: bytes, key: str) -> list[tuple[str, bytes, dict]]:
    """A header changed, the body changed, and the signature left off (unsigned)."""
    base = _properties(props)
    head = base.pop("headers")
    unsigned = {k: v for k, v in head.items() if k != ENVELOPE_HEADER}
    return [(key, body, {**base, "headers": {**head, "fedora_messaging_severity": 40}}),
            (key, body[:-1] + b',"mallory":1}', {**base, "headers": head}),
            (key, body, {**base, "headers": unsigned})]


@pytest.mark.rabbitmq
@pytest.mark.parametrize("backend", ["x509", "openpgp"])
def test_daemon_signs_and_the_amqp_subscriber_verifies(daemon, pki, vhost, queues, backend):
    """busgate run signs and publishes on AMQP; the AMQP subscriber with the configured
    verifier takes the genuine message (the stored envelope, exactly) and rejects the
    tampered and unsigned copies without requeue, counted by reason."""
    from gateway.amqp_subscriber import AmqpSubscriber

    queue = f"signed-{uuid.uuid4().hex[:6]}"
    queues.append(queue)
    bind_queue(vhost, queue, "org.debian.dev.myapp.#")
    amqp = amqp_settings(lambda **s: s, vhost)["amqp"]
    proc, settings = daemon(signing=_signing(pki, backend), amqp=amqp)
    subprocess.run([*BUSGATE, "publish", "--modname", "myapp", "--topic", "package.accept",
                    "--json-input"], input=json.dumps({"source": "hebcal"}), text=True,
                   env=proc.env, cwd=REPO, check=True, timeout=30)
    ((key, props, body),) = drain(vhost, queue, expect=1, timeout=30)
    assert ENVELOPE_HEADER in props.headers
    # three bad copies, then the genuine message again
    for copy_ in [*_tampered_copies(props, body, key), (key, body, _properties(props))]:
        _publish_raw(vhost, *copy_)
    refused: list[tuple[dict[str, Any], SignatureError]] = []
    with AmqpSubscriber(settings.amqp, queue, verifier=verify.from_settings(settings.signing),
                        on_reject=lambda e, error: refused.append((e, error))) as subscriber:
        got = list(subscriber.messages(count=1, timeout=10))
    assert len(got) == 1
    (row,) = runtime.open_store(settings).envelopes("seq_id = ?", [1], 2)
    assert got[0].envelope == json.loads(row)  # the stored, signed envelope
    assert got[0].envelope["crypto"] == backend
    assert subscriber.rejected_by == {"bad-signature": 2, "unsigned": 1}
    assert subscriber.rejected == 3
    assert [error.reason for _, error in refused] == ["bad-signature", "bad-signature",
                                                      "unsigned"]
    assert drain(vhost, queue, expect=0, timeout=1) == []  # not requeued


@pytest.mark.rabbitmq
def test_tail_amqp_warns_once_per_refused_message(make_settings, pki, vhost, queues,
                                                  test_types):
    """`busgate tail --amqp` prints the genuine message and one stderr line per refused
    one (topic, seq_id, queue, reason), as the ZeroMQ tail does."""
    from amqp_helpers import mixed_batch, publish_outbox

    signing = _signing(pki, "x509") | {"routing_nitpicky": False}
    settings = amqp_settings(lambda **s: make_settings(**s, signing=signing), vhost)
    queue = f"tail-signed-{uuid.uuid4().hex[:6]}"
    queues.append(queue)
    bind_queue(vhost, queue, "org.debian.dev.amqptest.package.#")
    store = runtime.open_store(settings)
    with store.transaction() as tx:
        tx.add_events(mixed_batch()[:1])  # one upload
    publish_outbox(settings, store)
    ((key, props, body),) = drain(vhost, queue, expect=1, timeout=30)
    for copy_ in [*_tampered_copies(props, body, key), (key, body, _properties(props))]:
        _publish_raw(vhost, *copy_)
    tail = subprocess.run([*BUSGATE, "--config", settings.loaded_from[0], "tail", "--amqp",
                           queue, "--count", "1", "--timeout", "20"], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert tail.returncode == 0, tail.stderr
    (printed,) = [json.loads(line) for line in tail.stdout.splitlines()]
    (row,) = store.envelopes("seq_id = ?", [1], 2)
    assert printed == json.loads(row)
    warnings = tail.stderr.splitlines()
    assert len(warnings) == 3, tail.stderr
    where = f"busgate tail: rejected {key} seq_id 1 from queue {queue}: "
    assert all(line.startswith(where) for line in warnings)
    assert ["bad-signature" in w for w in warnings] == [True, True, False]
    assert "unsigned" in warnings[2]
    assert drain(vhost, queue, expect=0, timeout=1) == []
