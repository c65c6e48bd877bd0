"""Pollers inside a real ``busgate run``: scheduled, retried with back-off, published."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from fixtures.debbugs.soapserver import FakeDebbugs
from gateway import discovery, heartbeat, runtime
from gateway.subscriber import Subscriber


@pytest.fixture
def fake() -> Iterator[FakeDebbugs]:
    server = FakeDebbugs().start()
    yield server
    server.stop()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_debbugs_poller_runs_in_the_daemon_survives_failures_and_publishes(daemon, fake):
    fake.put(10, package="udisks2", source="udisks2", subject="panic")
    fake.failures = {"*": ("fault", "database is down")}
    proc, settings = daemon(debbugs={
        "enabled": True, "url": fake.url, "packages": ["udisks2"], "watch_new": False,
        "interval": 0.3, "mail_grace": 0.0, "retries": 0, "timeout": 3.0,
    })
    wait_for(lambda: "poller debbugs failed" in proc.output(), what="a failed poll")
    assert "retrying in" in proc.output()
    store = runtime.open_store(settings)
    assert store.counters().get("poll.debbugs.failed", 0) >= 1
    assert proc.proc.poll() is None, "a failing poller must not stop the daemon"

    fake.failures = {}
    wait_for(lambda: store.snapshot("debbugs", "10") is not None, what="the baseline poll")
    with Subscriber(discovery.discover(settings), resume_from=store.last_seq_id(),
                    heartbeat_topic=heartbeat.topic(settings.topic_prefix)) as sub:
        fake.change(10, severity="serious")
        (message,) = list(sub.messages(count=1, timeout=20))
    assert message.topic == "org.debian.dev.debbugs.bug.update"
    assert message.body["bug"] == 10
    assert message.body["changes"]["severity"] == ["normal", "serious"]
    calls_before = len(fake.calls)
    time.sleep(1.0)
    polls = [m for m in fake.methods()[calls_before:] if m == "get_bugs"]
    assert 1 <= len(polls) <= 5, "the poller runs on its interval, one poll at a time"
    assert proc.stop() == 0
