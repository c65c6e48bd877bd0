"""Run the configured pollers inside the daemon's loop, on the monotonic clock.

Each poller is one asyncio task that polls, then sleeps its interval (or its
back-off) and polls again: it never overlaps itself, and a failure is logged
and backs off (:mod:`gateway.backoff`, the rule ``busgate poll`` follows too)
while the daemon and the other pollers go on. A poll returns its events and
state plan; :func:`gateway.polling.apply` commits both in one transaction.
The waits are asyncio sleeps, which run on ``time.monotonic``: a wall clock
stepped back or forward (NTP, an operator, a VM resume) neither stops nor
bunches the polls. (APScheduler's scheduler, used before, waits on the wall
clock: a 1 h step back stopped every poller.)

A poller with a crontab ``schedule`` runs at wall-clock times by nature ("at
03:00"). APScheduler's :class:`CronTrigger` computes the next such time, and the
wait towards it is re-aimed from the wall clock at least every
``WALL_RECHECK`` seconds: a step back or forward is followed within that time,
and never stops the poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from gateway import backoff, config, pollers, polling
from gateway.config import QuarantineSettings, Settings
from gateway.errors import StoreError, TransientError
from gateway.store import Store

log = logging.getLogger(__name__)

#: Longest monotonic sleep towards a crontab time before the wall clock is read again.
WALL_RECHECK = 30.0


class PollJob:
    def __init__(self, name: str, poller: polling.Poller, store: Store, interval: float,
                 on_added: Callable[[], None], cron: object | None = None,
                 wall: Callable[[], datetime] = datetime.now,
                 caps: QuarantineSettings | None = None):
        self.name = name
        self.poller = poller
        self.store = store
        self.interval = interval
        self.on_added = on_added
        #: APScheduler ``CronTrigger`` or ``None`` (every ``interval`` seconds).
        self.cron = cron
        self.wall = wall
        #: ``[quarantine]`` caps for the poison inputs a poll sets aside.
        self.caps = caps
        self.failures = 0
        self.not_before = 0.0

    async def run(self) -> None:
        """One scheduled run: poll unless still backing off after a failure."""
        if time.monotonic() < self.not_before:
            return
        started = time.monotonic()
        try:
            result, added = await asyncio.to_thread(self._poll)
        except Exception as exc:
            _observe(self.name, time.monotonic() - started)
            self.failures += 1
            delay = backoff.delay(self.interval, self.failures)
            self.not_before = time.monotonic() + delay
            with contextlib.suppress(StoreError):  # the state may be what failed
                await asyncio.to_thread(self._count, "failed")
            if isinstance(exc, TransientError):
                log.warning("poller %s failed (%s); retrying in %.0f s", self.name, exc, delay)
            else:
                log.exception("poller %s crashed; retrying in %.0f s", self.name, delay)
            return
        _observe(self.name, time.monotonic() - started)
        self.failures = 0
        self.not_before = 0.0
        if result.summary or added:
            log.info("poller %s: %s%d new event(s)", self.name,
                     f"{result.summary}; " if result.summary else "", len(added))
        if added:
            self.on_added()

    def _poll(self) -> tuple[polling.PollResult, list[int]]:
        """Poll, then commit what it found (in the worker thread: both block)."""
        result = self.poller.poll(polling.StoreView(self.store))
        return result, polling.apply(self.store, result, self.caps)

    def wait(self) -> float:
        """Seconds until the next run is due (monotonic)."""
        return max(self.not_before - time.monotonic(), self.interval)

    def next_cron_time(self) -> datetime:
        """The trigger's next fire time after now, by the wall clock."""
        now = self.wall().astimezone()
        return self.cron.get_next_fire_time(None, now)  # type: ignore[attr-defined]

    async def wait_for_cron(self) -> None:
        """Sleep until the next crontab time; a wall-clock step re-aims the wait."""
        due = self.next_cron_time()
        while (left := (due - self.wall().astimezone()).total_seconds()) > 0:
            await asyncio.sleep(min(left, WALL_RECHECK))
            # Unchanged while the clock runs on; earlier after a step back (the next
            # time from the new now), and a step forward makes ``left`` negative.
            due = min(due, self.next_cron_time())

    async def forever(self) -> None:
        while True:
            await self.run()
            if self.cron is None:
                await asyncio.sleep(self.wait())
            else:
                await self.wait_for_cron()
                if (delay := self.not_before - time.monotonic()) > 0:
                    await asyncio.sleep(delay)  # still backing off after a failure

    def _count(self, outcome: str) -> None:
        with self.store.transaction() as tx:
            tx.bump(f"poll.{self.name}.{outcome}")


def _observe(name: str, seconds: float) -> None:
    """A poll's duration for ``/metrics`` (prometheus-client loaded only when asked)."""
    import sys

    metrics = sys.modules.get("gateway.metrics")
    if metrics is not None:
        metrics.observe_poll(name, seconds)


class Jobs:
    """The running poll tasks; :meth:`shutdown` cancels them."""

    def __init__(self, jobs: list[PollJob]):
        self.jobs = jobs
        self.tasks = [asyncio.create_task(job.forever(), name=f"poll-{job.name}")
                      for job in jobs]

    def shutdown(self, wait: bool = False) -> None:
        for task in self.tasks:
            task.cancel()


def start(settings: Settings, store: Store, on_added: Callable[[], None]) -> Jobs | None:
    """Start every enabled poller (first poll now); ``None`` when none is enabled.
    Must be called inside the running loop."""
    names = pollers.enabled(settings)
    if not names:
        return None
    jobs = []
    for name in names:
        every = pollers.interval(name, settings)
        line = pollers.schedule(name, settings)
        cron = config.cron_trigger(line) if line else None
        jobs.append(PollJob(name, pollers.make(name, settings), store, every, on_added, cron,
                            caps=settings.quarantine))
        log.info("poller %s %s", name, f"on {line!r}" if line else f"every {every:g} s")
    return Jobs(jobs)
