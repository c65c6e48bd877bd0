"""Run the configured pollers on APScheduler inside the daemon's loop.

Each poller is one job that never overlaps itself (``max_instances=1``,
``coalesce``). A poll runs in a worker thread; a failure is logged and backs
off exponentially (capped), while the daemon and the other pollers go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from gateway import pollers
from gateway.config import Settings
from gateway.errors import TransientError
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
            if isinstance(exc, TransientError):
                log.warning("poller %s failed (%s); retrying in %.0f s", self.name, exc, delay)
            else:
                log.exception("poller %s crashed; retrying in %.0f s", self.name, delay)
            await asyncio.to_thread(self._count, "failed")
            return
        self.failures = 0
        self.not_before = 0.0
        if events:
            log.info("poller %s: %d new event(s)", self.name, len(events))
            self.on_added()

    def _count(self, outcome: str) -> None:
        with self.store.transaction() as tx:
            tx.bump(f"poll.{self.name}.{outcome}")


def start(settings: Settings, store: Store,
          on_added: Callable[[], None]) -> AsyncIOScheduler | None:
    """Schedule every enabled poller; ``None`` when none is enabled."""
    names = pollers.enabled(settings)
    if not names:
        return None
    scheduler = AsyncIOScheduler()
    for name in names:
        every = pollers.interval(name, settings)
        job = PollJob(name, pollers.make(name, settings), store, every, on_added)
        # the bound coroutine method: APScheduler 3 runs a callable object in a thread pool
        scheduler.add_job(job.run, IntervalTrigger(seconds=every), id=name, name=name,
                          max_instances=1, coalesce=True, misfire_grace_time=None,
                          next_run_time=_now())
        log.info("poller %s every %g s", name, every)
    scheduler.start()
    return scheduler


def _now():  # type: ignore[no-untyped-def]
    import datetime

    return datetime.datetime.now(datetime.UTC)
