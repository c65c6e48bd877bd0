"""kill -9 the daemon at random moments while 10,000 events flow through the spool."""

from __future__ import annotations

import json
import random
import threading
import time

from gateway import discovery, heartbeat, runtime
from gateway.event import Event
from gateway.subscriber import Subscriber

TOTAL = 10_000
PER_ITEM = 100


def test_kill_9_loses_nothing_and_duplicates_nothing(daemon):
    proc, settings = daemon(zmq={"heartbeat_interval": 0.3})
    spool = runtime.open_spool(settings)
    rng = random.Random(20261127)

    def feed() -> None:
        for item in range(TOTAL // PER_ITEM):
            lines = [
                json.dumps(Event("logger", "message", "log", key=f"crash:{n}",
                                 body={"n": n}).to_dict()).encode() + b"\n"
                for n in range(item * PER_ITEM, (item + 1) * PER_ITEM)
            ]
            spool.deliver("events", lines)
            time.sleep(rng.uniform(0.01, 0.03))

    received: dict[int, int] = {}
    feeder = threading.Thread(target=feed)
    with Subscriber(discovery.discover(settings), resume_from=0,
                    heartbeat_topic=heartbeat.topic(settings.topic_prefix)) as sub:
        feeder.start()
        kills = busy = 0
        store = runtime.open_store(settings)
        while feeder.is_alive() or kills < 5:
            for message in sub.messages(timeout=rng.uniform(0.05, 0.4)):
                received[message.body["n"]] = received.get(message.body["n"], 0) + 1
            busy += feeder.is_alive()
            proc.kill()
            kills += 1
            proc.start()
        feeder.join()
        for message in sub.messages(idle=3.0, timeout=60):
            received[message.body["n"]] = received.get(message.body["n"], 0) + 1
    assert proc.stop() == 0

    assert kills >= 5
    missing = set(range(TOTAL)) - set(received)
    assert not missing, f"{len(missing)} events never reached the subscriber"
    assert max(received.values()) == 1, "a subscriber got an event twice"
    assert busy >= 3, "kills must hit the daemon while events are flowing"

    conn = store.connect()
    count, distinct, lo, hi = conn.execute(
        "SELECT COUNT(*), COUNT(DISTINCT msg_id), MIN(seq_id), MAX(seq_id) FROM outbox"
    ).fetchone()
    assert (count, distinct, lo, hi) == (TOTAL, TOTAL, 1, TOTAL)
    assert store.published_seq_id() == TOTAL
    assert spool.pending() == []
