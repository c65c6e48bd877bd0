"""The broker fails under a running ``busgate run`` (``rabbitmqctl stop_app`` /
``start_app``), or is down when it starts: every msg_id reaches the queue at least
once, duplicates only among the messages unconfirmed at the failure (the daemon logs
their seq_id range), ZeroMQ never waits for the broker, and ``busgate status`` shows
the AMQP cursor catching up.

Slow (a broker stop and start each, ~15 s): marked ``slow``; the broker is started
again in a ``finally`` whatever happens.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from amqp_helpers import bind_queue, drain, ensure_running, rabbitmqctl
from conftest import BUSGATE, REPO

from gateway import runtime
from gateway.event import Event
from gateway.store import AMQP_CURSOR, PUBLISHED_CURSOR

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

UNCONFIRMED = re.compile(rb"unconfirmed when the connection ended \(seq_id (\d+)-(\d+)\)")


def status(daemon: Any) -> dict[str, Any]:
    proc = subprocess.run([*BUSGATE, "status", "--json"], env=daemon.env, capture_output=True,
                          text=True, timeout=30, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wait_for(what: str, check: Any, timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def feed(settings: Any, total: int, chunk: int = 500, pause: float = 0.05) -> threading.Thread:
    """Add ``total`` events to the running daemon's outbox in chunks (a stream)."""
    def run() -> None:
        store = runtime.open_store(settings, create=False)
        tag = uuid.uuid4().hex
        for start in range(0, total, chunk):
            with store.transaction() as tx:
                tx.add_events([Event(service="dak", object="package", event="accept",
                                     key=f"{tag}-{i}", body={"source": "hebcal", "n": i})
                               for i in range(start, min(total, start + chunk))])
            time.sleep(pause)
        store.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def amqp_daemon(daemon: Any, vhost: str) -> tuple[Any, Any, str]:
    tag = uuid.uuid4().hex[:8]
    queue = f"all-{tag}"
    bind_queue(vhost, queue)
    proc, settings = daemon(amqp={
        "enabled": True, "vhost": vhost, "alternate_exchange": f"unroutable-{tag}",
        "unroutable_queue": f"unroutable-{tag}", "reconnect_min": 0.2, "reconnect_max": 1.0,
        "connect_timeout": 5.0})
    return proc, settings, queue


def check_delivered(vhost: str, queue: str, settings: Any, log: bytes,
                    total: int) -> Counter[int]:
    store = runtime.open_store(settings, create=False)
    ids = {json.loads(r.envelope)["msg_id"]: r.seq_id for r in store.rows_after(0, total + 1)}
    store.close()
    got = drain(vhost, queue, expect=total, timeout=60)
    seen = Counter(props.message_id for _, props, _ in got)
    assert set(seen) == set(ids), f"missing {len(set(ids) - set(seen))} msg_ids"
    ranges = [(int(a), int(b)) for a, b in UNCONFIRMED.findall(log)]
    for msg_id, count in seen.items():
        if count > 1:
            seq = ids[msg_id]
            assert any(a <= seq <= b for a, b in ranges), \
                f"seq_id {seq} delivered {count} times but was not unconfirmed at a failure"
    return Counter({ids[m]: c for m, c in seen.items()})


def test_broker_stopped_mid_stream(daemon, vhost, queues):
    total = 20000
    proc, settings, queue = amqp_daemon(daemon, vhost)
    queues.append(queue)
    store = runtime.open_store(settings, create=False)

    def amqp_cursor() -> int:
        return int(store.cursor(AMQP_CURSOR) or 0)

    feeder = feed(settings, total, chunk=1000, pause=0.1)  # ~10,000/s: a backlog in flight
    try:
        wait_for("the AMQP cursor to pass 1000", lambda: amqp_cursor() >= 1000, 30)
        rabbitmqctl("stop_app", timeout=60)
        at_stop = amqp_cursor()
        assert at_stop < total, "the broker stopped after the stream, not in it"
        feeder.join(60)
        # ZeroMQ goes on without the broker; the AMQP cursor waits.
        wait_for("ZeroMQ to publish everything",
                 lambda: int(store.cursor(PUBLISHED_CURSOR) or 0) == total, 30)
        down = status(proc)
        assert down["transports"]["zmq"] == {"cursor": total, "lag": 0}
        assert 0 < down["transports"]["amqp"]["lag"] <= total - at_stop + 1000
        assert "amqp" in down["faults"] and down["health"] == "degraded"
    finally:
        ensure_running()
    lags = [down["transports"]["amqp"]["lag"]]

    def caught_up() -> bool:
        lags.append(status(proc)["transports"]["amqp"]["lag"])
        return lags[-1] == 0

    wait_for("the AMQP cursor to catch up", caught_up, 90, every=0.2)
    assert lags == sorted(lags, reverse=True)  # status shows it catching up
    assert status(proc)["health"] == "ok"
    proc.stop()
    log = proc.log_path.read_bytes()
    # (Nothing may have been in flight at that instant: then no duplicate at all.)
    counts = check_delivered(vhost, queue, settings, log, total)
    duplicates = sum(c - 1 for c in counts.values())
    counters = runtime.open_store(settings, create=False).counters()
    unconfirmed = counters.get("amqp.unconfirmed_at_failure", 0)
    assert duplicates <= unconfirmed
    assert counters["amqp.connection_lost"] >= 1
    print(f"stopped at cursor {at_stop}; duplicates {duplicates}; "
          f"unconfirmed at failure {unconfirmed}")


def test_broker_down_at_startup(daemon, vhost, queues):
    total = 2000
    tag = uuid.uuid4().hex[:8]
    queue = f"all-{tag}"
    queues.append(queue)
    bind_queue(vhost, queue)
    rabbitmqctl("stop_app", timeout=60)
    try:
        proc, settings = daemon(amqp={
            "enabled": True, "vhost": vhost, "alternate_exchange": f"unroutable-{tag}",
            "unroutable_queue": f"unroutable-{tag}", "reconnect_min": 0.2,
            "reconnect_max": 1.0, "connect_timeout": 5.0})
        feed(settings, total).join(60)
        store = runtime.open_store(settings, create=False)
        wait_for("ZeroMQ to publish everything",
                 lambda: int(store.cursor(PUBLISHED_CURSOR) or 0) == total, 30)
        def fault() -> dict[str, Any] | None:
            now = status(proc)
            return now if "amqp" in now["faults"] else None

        down = wait_for("the AMQP fault in status", fault, 30)
        assert down["transports"]["amqp"] == {"cursor": 0, "lag": total}
        assert "cannot reach the AMQP broker" in down["faults"]["amqp"]["problem"]
        text = subprocess.run([*BUSGATE, "status"], env=proc.env, capture_output=True,
                              text=True, timeout=30, cwd=REPO).stdout
        assert re.search(rf"zmq cursor\s+{total} \(lag 0\)", text), text
        assert re.search(rf"amqp cursor\s+0 \(lag {total}\)", text), text
    finally:
        ensure_running()
    wait_for("the AMQP cursor to catch up",
             lambda: status(proc)["transports"]["amqp"]["lag"] == 0, 90, every=0.2)
    proc.stop()
    counts = check_delivered(vhost, queue, settings, proc.log_path.read_bytes(), total)
    assert set(counts.values()) == {1}  # nothing was in flight: no duplicates
