"""Pollers inside a real ``busgate run``: scheduled, retried with back-off, published."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from fixtures.debbugs.soapserver import FakeDebbugs
from gateway import discovery, heartbeat, runtime
from gateway.polling import PollResult
from gateway.store import EnvelopeFactory, Store
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


class CountingPoller:
    """A poller that only counts its polls (the schedule is what is under test)."""

    name = "counting"

    def __init__(self) -> None:
        self.polls: list[float] = []

    def poll(self, state) -> PollResult:
        self.polls.append(time.monotonic())
        return PollResult([])


def test_crontab_schedule_follows_a_wall_clock_step_back_and_forward(monkeypatch,
                                                                      tmp_path) -> None:
    """A crontab schedule is computed by APScheduler's CronTrigger on the wall clock; a
    1 h step back (or forward) must neither stop the poller nor bunch its runs."""
    import asyncio
    from datetime import datetime, timedelta

    from apscheduler.triggers.cron import CronTrigger

    from gateway import scheduler

    monkeypatch.setattr(scheduler, "WALL_RECHECK", 0.2)
    offset = timedelta(0)
    poller = CountingPoller()
    store = Store(tmp_path / "state.sqlite", EnvelopeFactory("org.test", "t", "t"))
    job = scheduler.PollJob("counting", poller, store, 60.0, lambda: None,
                            cron=CronTrigger(second="*"), wall=lambda: datetime.now() + offset)

    async def scenario() -> None:
        nonlocal offset
        task = asyncio.create_task(job.forever())
        await asyncio.sleep(2.5)
        before_step = len(poller.polls)
        offset = timedelta(hours=-1)  # the wall clock steps back one hour
        await asyncio.sleep(3.0)
        after_back = len(poller.polls) - before_step
        offset = timedelta(hours=1)  # then forward two hours
        await asyncio.sleep(2.0)
        task.cancel()
        assert before_step >= 2, poller.polls
        assert after_back >= 2, "a wall-clock step back stopped the crontab poller"
        # The first run is at start, the next on the first whole second; after the
        # step forward the missed second runs once (at once), then the schedule goes on.
        gaps = [b - a for a, b in zip(poller.polls[1:], poller.polls[2:], strict=False)]
        assert sum(gap < 0.9 for gap in gaps) <= 2, f"runs bunched after a step: {gaps}"
        assert min(gaps) > 0.05, f"runs bunched after a step: {gaps}"

    asyncio.run(scenario())


def test_a_bad_crontab_schedule_is_a_config_error_naming_the_key(make_settings) -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        make_settings(debbugs={"schedule": "every five minutes"})
    assert caught.value.key == "debbugs.schedule"
    settings = make_settings(wannabuild={"schedule": "*/5 * * * *"})
    assert settings.wannabuild.schedule == "*/5 * * * *"
