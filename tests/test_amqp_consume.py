"""The consumer side: ``busgate tail --amqp QUEUE`` and the AMQP subscriber (named
durable queue, ack after the callback, bounded), and two gateways into one broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from typing import Any

import pytest
from amqp_helpers import amqp_settings, bind_queue, channel, drain, mixed_batch, publish_outbox
from conftest import BUSGATE, REPO, write_config

from gateway import config, runtime
from gateway.amqp_outbox import AmqpPublisher
from gateway.amqp_subscriber import AmqpSubscriber, bindings
from gateway.event import Event

pytestmark = pytest.mark.rabbitmq


def outbox(settings: Any, events: list[Event]) -> Any:
    store = runtime.open_store(settings)
    with store.transaction() as tx:
        tx.add_events(events)
    return store


def test_tail_amqp_prints_and_acks(make_settings, vhost, queues, test_types):
    settings = amqp_settings(make_settings, vhost)
    queue = f"tail-{uuid.uuid4().hex[:6]}"
    queues.append(queue)
    bind_queue(vhost, queue)
    store = outbox(settings, mixed_batch())
    publish_outbox(settings, store)
    proc = subprocess.run([*BUSGATE, "--config", settings.loaded_from[0], "tail", "--amqp",
                           queue, "--count", "13", "--timeout", "20"], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    stored = [json.loads(r.envelope) for r in store.rows_after(0, 100)]
    assert [(e["topic"], e["msg_id"], e["seq_id"], e["msg"]) for e in lines] == [
        (e["topic"], e["msg_id"], e["seq_id"], e["msg"]) for e in stored]
    assert drain(vhost, queue, expect=0, timeout=1) == []  # every one acked


def test_tail_amqp_broker_unreachable(make_settings, tmp_path):
    path = write_config(tmp_path / "b.toml", {"state": {"dir": str(tmp_path / "var")},
                                              "amqp": {"url": "amqp://u:pw@127.0.0.1:1/",
                                                       "connect_timeout": 2.0}})
    proc = subprocess.run([*BUSGATE, "--config", str(path), "tail", "--amqp", "q",
                           "--timeout", "5"], capture_output=True, text=True, timeout=30,
                          cwd=REPO)
    assert proc.returncode == 69
    assert "amqp://u@127.0.0.1:1/" in proc.stderr and "pw" not in proc.stderr


def test_subscriber_acks_only_after_the_callback(make_settings, vhost, queues, test_types):
    settings = amqp_settings(make_settings, vhost)
    queue = f"sub-{uuid.uuid4().hex[:6]}"
    queues.append(queue)
    bind_queue(vhost, queue)
    publish_outbox(settings, outbox(settings, mixed_batch()[:5]))
    seen: list[int] = []

    def callback(envelope: dict[str, Any]) -> None:
        if envelope["seq_id"] == 3:
            raise RuntimeError("callback failed")
        seen.append(envelope["seq_id"])

    with AmqpSubscriber(settings.amqp, queue) as subscriber, \
            pytest.raises(RuntimeError, match="callback failed"):
        subscriber.consume(callback, timeout=10)
    assert seen == [1, 2]
    with AmqpSubscriber(settings.amqp, queue) as subscriber:
        again = list(subscriber.messages(count=3, timeout=10))
    assert [m.envelope["seq_id"] for m in again] == [3, 4, 5]
    assert again[0].redelivered  # (4 and 5 were prefetched unacked: redelivered too)


def test_subscriber_rejects_oversize_and_non_objects(make_settings, vhost, queues):
    settings = amqp_settings(make_settings, vhost, max_message_bytes=1000)
    queue = f"bad-{uuid.uuid4().hex[:6]}"
    queues.append(queue)
    bind_queue(vhost, queue)
    ch = channel(vhost)
    for body in (b"[1, 2, 3]", b'{"big": "' + b"x" * 2000 + b'"}', b"not json",
                 b'{"fine": true}'):
        ch.basic_publish("amq.topic", "org.debian.dev.test.thing.done", body)
    ch.connection.close()
    with AmqpSubscriber(settings.amqp, queue) as subscriber:
        got = list(subscriber.messages(count=1, timeout=10))
        assert subscriber.rejected == 3
    assert [m.envelope["msg"] for m in got] == [{"fine": True}]
    assert drain(vhost, queue, expect=0, timeout=1) == []  # rejected: not requeued


def test_bindings_for_topic_prefixes():
    assert bindings([]) == ["#"]
    assert bindings(["org.debian.dev.dak."]) == ["org.debian.dev.dak", "org.debian.dev.dak.#"]
    assert bindings(["org.debian.dev.d*"]) == ["#"]


def test_two_gateways_one_consumer(make_settings, vhost, queues, tmp_path):
    """Two busgate gateways (own outboxes, publisher names) publish into one RabbitMQ;
    one consumer gets both streams completely, each in its seq_id order."""
    queue = f"both-{uuid.uuid4().hex[:6]}"
    queues.append(queue)
    bind_queue(vhost, queue)
    gateways = []
    for name in ("gw-a", "gw-b"):
        path = write_config(tmp_path / f"{name}.toml", {
            "state": {"dir": str(tmp_path / name)}, "publisher": {"name": name},
            "amqp": {"enabled": True, "vhost": vhost}})
        settings = config.load(path)
        events = [Event(service="dak", object="package", event="accept", key=f"{name}{i}",
                        body={"source": "hebcal", "n": i}) for i in range(2000)]
        gateways.append((settings, outbox(settings, events)))

    async def both() -> None:
        publishers = [AmqpPublisher(s, store) for s, store in gateways]
        tasks = [asyncio.create_task(p.run()) for p in publishers]
        deadline = time.monotonic() + 60
        while any(p.recorded_seq < 2000 for p in publishers):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(both())
    with AmqpSubscriber(gateways[0][0].amqp, queue) as subscriber:
        got = [m.envelope for m in subscriber.messages(count=4000, timeout=30)]
    per = {name: [e["seq_id"] for e in got if e["publisher"] == name]
           for name in ("gw-a", "gw-b")}
    assert per == {"gw-a": list(range(1, 2001)), "gw-b": list(range(1, 2001))}
