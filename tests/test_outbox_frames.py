"""The publisher sends the stored envelope bytes as they are (issue 16): the frames read
from the outbox are byte for byte the stored texts, encoded, and a live subscriber gets
the same envelopes as the outbox holds."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway import discovery, heartbeat, runtime
from gateway.event import Event
from gateway.subscriber import Subscriber


def test_frames_are_the_stored_texts_as_utf8(tmp_path: Path, make_settings) -> None:
    store = runtime.open_store(make_settings())
    bodies = [{"name": "Jörg Müller", "emoji": "\U0001f600"}, {"n": 2**70, "f": 1e-5}, {}]
    with store.transaction() as tx:
        tx.add_events([Event("dak", "package", "accept", key=f"k{n}", body=body)
                       for n, body in enumerate(bodies)])
    rows = store.rows_after(0, 10)
    assert store.frames_after(0, 10) == [(r.seq_id, r.topic.encode(), r.envelope.encode())
                                         for r in rows]
    assert [json.loads(r.envelope)["msg"] for r in rows] == bodies
    assert store.frames_after(2, 10) == store.frames_after(0, 10)[2:]
    assert store.frames_after(0, 1) == store.frames_after(0, 10)[:1]


def test_a_subscriber_gets_the_stored_envelopes(daemon) -> None:
    _proc, settings = daemon()
    store = runtime.open_store(settings)
    # since: the publisher's position is asked first, so the probe is caught up by replay
    # if it goes out before the SUB connection is up (it was lost once under a full run)
    subscriber = Subscriber(discovery.discover(settings),
                            heartbeat_topic=heartbeat.topic(settings.topic_prefix),
                            since=time.time())
    try:
        with store.transaction() as tx:
            tx.add_events([Event("dak", "package", "accept", key="probe", body={"a": 1})])
        assert [m.envelope["msg"] for m in subscriber.messages(count=1, timeout=30)] \
            == [{"a": 1}]
        with store.transaction() as tx:
            tx.add_events([Event("dak", "package", "accept", key=f"e{n}",
                                 body={"name": "Jörg", "n": n}) for n in range(20)])
        got = [m.envelope for m in subscriber.messages(count=20, timeout=30)]
    finally:
        subscriber.close()
    stored = {r.seq_id: json.loads(r.envelope) for r in store.rows_after(1, 100)}
    assert [e["seq_id"] for e in got] == sorted(stored)
    assert got == [stored[e["seq_id"]] for e in got]
