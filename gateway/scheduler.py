"""Run the configured pollers inside the daemon's loop, on the monotonic clock.

Each poller is one asyncio task that polls, then sleeps its interval (or its
back-off) and polls again: it never overlaps itself, and a failure is logged
and backs off exponentially (capped) while the daemon and the other pollers go
on. The waits are asyncio sleeps, which run on ``time.monotonic``: a wall clock
stepped back or forward (NTP, an operator, a VM resume) neither stops nor
bunches the polls. (APScheduler, used before, schedules on the wall clock: a
1 h step back stopped every poller.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway import pollers
from gateway.config import Settings
from gateway.errors import StoreError, TransientError
from gateway.store import Store

log = logging.getLogger(__name__)

MAX_BACKOFF = 3600.0


class PollJob:
    def __init__(self, name: str, poller: pollers.Poller, store: Store, interval: float,
                 on_added: Callable[[], None]):
        self.name = name
        self.poller = poller
        self.store = store
        self.interval = interval
        self.on_added = on_added
        self.failures = 0
        self.not_before = 0.0

    async def run(self) -> None:
        """One scheduled run: poll unless still backing off after a failure."""
        if time.monotonic() < self.not_before:
            return
        try:
            events = await asyncio.to_thread(self.poller.poll, self.store)
        except Exception as exc:
            self.failures += 1
            delay = min(self.interval * 2 ** (self.failures - 1), MAX_BACKOFF)
            self.not_before = time.monotonic() + delay
            with contextlib.suppress(StoreError):  # the state may be what failed
                await asyncio.to_thread(self._count, "failed")
            if isinstance(exc, TransientError):
                log.warning("poller %s failed (%s); retrying in %.0f s", self.name, exc, delay)
            else:
                log.exception("poller %s crashed; retrying in %.0f s", self.name, delay)
            return
        self.failures = 0
        self.not_before = 0.0
        if events:
            log.info("poller %s: %d new event(s)", self.name, len(events))
            self.on_added()

    def wait(self) -> float:
        """Seconds until the next run is due (monotonic)."""
        return max(self.not_before - time.monotonic(), self.interval)

    async def forever(self) -> None:
        while True:
            await self.run()
            await asyncio.sleep(self.wait())

    def _count(self, outcome: str) -> None:
        with self.store.transaction() as tx:
            tx.bump(f"poll.{self.name}.{outcome}")


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
        jobs.append(PollJob(name, pollers.make(name, settings), store, every, on_added))
        log.info("poller %s every %g s", name, every)
    return Jobs(jobs)
