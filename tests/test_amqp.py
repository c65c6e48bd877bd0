"""AMQP against the real RabbitMQ: stock fedora-messaging consumers read busgate's
messages, unroutable messages are kept, the cursor advances only after confirms.

Each run works in a vhost of its own (tests/amqp_helpers.py), deleted after.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from amqp_helpers import (
    CONTRIB,
    amqp_settings,
    bind_queue,
    drain,
    json_lines,
    mixed_batch,
    publish_outbox,
    url,
)
from conftest import REPO

from gateway import runtime, sources
from gateway.amqp_outbox import AmqpPublisher
from gateway.event import Event
from gateway.store import AMQP_CURSOR, PUBLISHED_CURSOR

pytestmark = pytest.mark.rabbitmq


def test_wire_format_and_cursor(make_settings, vhost, queues, test_types):
    """Properties, headers and body as fedora-messaging's; the AMQP cursor is its own."""
    settings = amqp_settings(make_settings, vhost)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    queues.append(queue)
    bind_queue(vhost, queue)
    store = runtime.open_store(settings)
    with store.transaction() as tx:
        tx.add_events(mixed_batch())
    publish_outbox(settings, store)
    assert store.cursor(AMQP_CURSOR) == "13"
    assert store.cursor(PUBLISHED_CURSOR) is None  # ZeroMQ's cursor untouched
    got = drain(vhost, queue, expect=13)
    stored = {json.loads(r.envelope)["msg_id"]: json.loads(r.envelope)
              for r in store.rows_after(0, 100)}
    assert len(got) == 13
    for key, props, body in got:
        envelope = stored[props.message_id]
        assert key == envelope["topic"]
        assert json.loads(body) == envelope["msg"]
        assert (props.content_type, props.content_encoding, props.delivery_mode,
                props.priority) == ("application/json", "utf-8", 2, 0)
        head = props.headers
        assert head["busgate_seq_id"] == envelope["seq_id"]
        assert head["busgate_publisher"] == "busgate"
        assert head["priority"] == 0
        assert head["sent-at"].startswith(time.strftime("%Y-", time.gmtime(
            envelope["timestamp"])))
        if ".package.upload" in key:
            assert head["fedora_messaging_schema"] == "busgate.amqptest.package.upload.v1"
            assert head[f"fedora_messaging_user_{envelope['msg']['by']}"] is True
            assert head[f"busgate_package_{envelope['msg']['source']}"] is True
        elif ".build." in key:
            assert head["fedora_messaging_schema"] == "busgate.amqptest.build.state.v1"
            assert head["fedora_messaging_severity"] == 30
        else:
            assert head["fedora_messaging_schema"] == "base.message"
    assert store.counters()["amqp.confirmed"] == 13


def _fm_env(tmp_path: Path, vhost: str, queue: str, out: Path, n: int,
            test_types: Path) -> dict[str, str]:
    conf = tmp_path / f"fm-{queue}.toml"
    conf.write_text(
        f'amqp_url = "{url(vhost)}"\ncallback = "amqp_fm_callback:record"\n'
        f'[queues."{queue}"]\ndurable = true\nauto_delete = false\nexclusive = false\n'
        f'arguments = {{}}\n'
        f'[[bindings]]\nqueue = "{queue}"\nexchange = "amq.topic"\nrouting_keys = ["#"]\n'
        '[client_properties]\napp = "busgate test"\n')
    path = os.pathsep.join([str(test_types), str(CONTRIB), str(REPO / "tests"), str(REPO)])
    return {**os.environ, "FEDORA_MESSAGING_CONF": str(conf), "PYTHONPATH": path,
            "BUSGATE_TEST_OUT": str(out), "BUSGATE_TEST_N": str(n)}


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "x509"])
def test_stock_fedora_messaging_consumers(make_settings, vhost, queues, test_types,
                                          tmp_path, signed):
    """`fedora-messaging consume` and api.consume get every message of a mixed batch
    with its topic, id, body, schema class, summary, users and packages; signed ones
    too (they only carry one header more)."""
    pytest.importorskip("fedora_messaging")
    if signed:
        from signing_helpers import make_pki

        pki = make_pki(tmp_path / "pki")
        signing = {"backend": "x509", "cert": str(pki.cert), "key": str(pki.key)}
        settings = amqp_settings(lambda **s: make_settings(**s, signing=signing), vhost)
    else:
        settings = amqp_settings(make_settings, vhost)
    names = {"cli": f"fm-cli-{uuid.uuid4().hex[:6]}", "api": f"fm-api-{uuid.uuid4().hex[:6]}"}
    for queue in names.values():
        queues.append(queue)
        bind_queue(vhost, queue)
    store = runtime.open_store(settings)
    events = mixed_batch()
    with store.transaction() as tx:
        tx.add_events(events)
    publish_outbox(settings, store)
    index = sources.type_index(settings)
    expected = {}
    for row in store.rows_after(0, 100):
        envelope = json.loads(row.envelope)
        message = index.for_envelope(envelope)
        expected[envelope["msg_id"]] = (envelope, message)
    bin_dir = Path(sys.executable).parent
    runs = {
        "cli": [str(bin_dir / "fedora-messaging"), "consume"],
        "api": [sys.executable, str(REPO / "tests" / "amqp_fm_callback.py"), names["api"]],
    }
    for how, command in runs.items():
        out = tmp_path / f"{how}.jsonl"
        env = _fm_env(tmp_path, vhost, names[how], out, len(events), test_types)
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)
        lines = json_lines(out)
        assert len(lines) == len(events), (how, proc.returncode, proc.stderr[-3000:])
        assert {line["id"] for line in lines} == set(expected)
        for line in lines:
            envelope, message = expected[line["id"]]
            assert line["topic"] == envelope["topic"]
            assert line["body"] == envelope["msg"]
            assert line["severity"] == message.severity
            if message.name == "base.message":  # fedora-messaging's own base class
                assert line["class"] == "Message"
                assert line["module"] == "fedora_messaging.message"
                assert line["summary"] == envelope["topic"]
            else:
                assert line["summary"] == message.summary
                assert line["usernames"] == message.usernames
                assert line["packages"] == message.packages
                assert line["module"] == "busgate_messages"
                assert line["class"] == message.name.replace(".", "_")
                assert line["url"] == message.url
            assert ("busgate_envelope" in line["headers"]) is signed
        uploads = [line for line in lines if ".upload" in line["topic"]]
        assert uploads[0]["summary"].startswith("pkg") and uploads[0]["usernames"]


@pytest.mark.parametrize("exchange", ["amq.topic", "own"])
def test_unroutable_kept_and_counted(make_settings, vhost, queues, test_types, exchange):
    """A topic no queue is bound for is kept in the unroutable queue, confirmed and
    counted, and the cursor passes it only then: on amq.topic the broker returns it
    (mandatory) and busgate republishes it; on an exchange busgate declares, the
    broker routes it to the alternate exchange itself."""
    tag = uuid.uuid4().hex[:6]
    own = exchange == "own"
    settings = amqp_settings(make_settings, vhost,
                             exchange=f"busgate-{tag}" if own else "amq.topic")
    queue = f"uploads-{tag}"
    queues += [queue, settings.amqp.unroutable_queue]
    store = runtime.open_store(settings)
    with store.transaction() as tx:
        tx.add_events(mixed_batch())
    if own:  # busgate declares its exchange on connecting; bind once it exists
        from gateway.transports.amqp import AmqpTransport

        async def declare() -> None:
            transport = AmqpTransport(settings.amqp)
            await transport.connect()
            await transport.close()

        asyncio.run(declare())
    bind_queue(vhost, queue, "org.debian.dev.amqptest.package.#",
               exchange=settings.amqp.exchange)
    publish_outbox(settings, store)
    routed = drain(vhost, queue, expect=6)
    kept = drain(vhost, settings.amqp.unroutable_queue, expect=7)
    assert sorted(k for k, _, _ in routed) == ["org.debian.dev.amqptest.package.upload"] * 6
    assert sorted({k for k, _, _ in kept}) == [
        "org.debian.dev.amqptest.build.built", "org.debian.dev.amqptest.build.failed",
        "org.debian.dev.other.thing.happened"]
    assert len(kept) == 7
    assert all(p.message_id and p.headers["busgate_seq_id"] for _, p, _ in kept)
    counters = store.counters()
    assert counters["amqp.confirmed"] == 13
    # Returned-and-republished ones are counted; the broker's own alternate routing is
    # invisible to a publisher (the queue holds them).
    assert counters.get("amqp.unroutable", 0) == (0 if own else 7)
    assert store.cursor(AMQP_CURSOR) == "13"


def test_passive_topology_refuses_missing(make_settings, vhost):
    """With passive = true busgate declares nothing: a missing exchange is an error
    naming it (and the publisher keeps retrying, the outbox untouched)."""
    from gateway.transports.amqp import AmqpError, AmqpTransport

    settings = amqp_settings(make_settings, vhost, passive=True)

    async def run() -> None:
        transport = AmqpTransport(settings.amqp)
        try:
            await transport.connect()
        finally:
            await transport.close()

    with pytest.raises(AmqpError, match=settings.amqp.alternate_exchange):
        asyncio.run(run())


def test_confirm_window_bounds_what_is_in_flight(make_settings, vhost, queues):
    settings = amqp_settings(make_settings, vhost, confirm_window=64)
    queue = f"w-{uuid.uuid4().hex[:6]}"
    queues.append(queue)
    bind_queue(vhost, queue)
    store = runtime.open_store(settings)
    with store.transaction() as tx:
        tx.add_events([Event(service="dak", object="package", event="accept", key=f"w{i}",
                             body={"n": i}) for i in range(3000)])
    publisher = publish_outbox(settings, store)
    assert publisher.max_inflight == 64  # filled, never over
    assert len(drain(vhost, queue, expect=3000)) == 3000


def test_reconnect_backs_off_within_its_bounds(make_settings):
    """Against a closed port: waits double from reconnect_min and stay under
    reconnect_max (jitter +-20%), the health flag says why."""
    from conftest import free_port

    from gateway import health

    settings = make_settings(amqp={"enabled": True, "url": f"amqp://127.0.0.1:{free_port()}/",
                                   "reconnect_min": 0.05, "reconnect_max": 0.2})
    store = runtime.open_store(settings)
    attempts: list[float] = []

    async def run() -> None:
        publisher = AmqpPublisher(settings, store)
        connect = publisher.transport.connect

        async def timed() -> None:
            attempts.append(time.monotonic())
            await connect()

        publisher.transport.connect = timed  # type: ignore[method-assign]
        task = asyncio.create_task(publisher.run())
        await asyncio.sleep(2.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # 0.05, then 0.1 (+-20%; the upper bounds leave room for a loaded machine)
    assert 0.04 <= gaps[0] < 0.15 and 0.08 <= gaps[1] < 0.25
    # capped at 0.2 (+20%): unbounded doubling would wait 1.6 s by the sixth attempt
    assert max(gaps) < 0.4 and len(attempts) >= 7
    assert "cannot reach the AMQP broker" in health.read(settings.state_dir)["amqp"]["problem"]
    assert store.counters()["amqp.connect_failed"] == len(attempts)
