"""``busgate run``: one asyncio loop wiring spool watcher, publisher, replay,
heartbeat, SMTP listener and pollers around the one state database."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.asyncio

from gateway import heartbeat, ingest, runtime
from gateway.config import Settings
from gateway.errors import StoreError
from gateway.publisher import Publisher
from gateway.replay import ReplayServer
from gateway.spool import Spool
from gateway.store import Store
from gateway.transports.zmq import ZmqPublisher

log = logging.getLogger(__name__)


class SpoolWatcher:
    """Move spool items into the outbox (or quarantine), oldest first, then delete them."""

    def __init__(self, spool: Spool, store: Store, settings: Settings,
                 on_added: Callable[[], None]):
        self.spool = spool
        self.store = store
        self.settings = settings
        self.on_added = on_added
        self.wake = asyncio.Event()
        self.interval = settings.state.spool_poll_ms / 1000

    def notify(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        self.spool.ensure()
        self.spool.clean_tmp()
        backoff = 0.0
        while True:
            self.wake.clear()
            items = self.spool.pending()
            for path in items:
                try:
                    outcome = await asyncio.to_thread(self._process, path)
                except StoreError as exc:
                    backoff = min(max(backoff * 2, 0.5), 30.0)
                    log.error("cannot store spool item %s (kept in the spool, retrying in "
                              "%.1f s): %s", path.name, backoff, exc)
                    break
                backoff = 0.0
                if outcome.added:
                    self.on_added()
            else:
                if not items:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), timeout=self.interval)
                continue
            await asyncio.sleep(backoff)

    def _process(self, path: Path) -> ingest.Outcome:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return ingest.Outcome()
        started = time.perf_counter()
        outcome = ingest.ingest(self.store, self.settings, Spool.kind_of(path), raw,
                                origin=path.name)
        Spool.remove(path)
        log.debug("%s: %d event(s) added, %d duplicate(s) in %.3f s", path.name, outcome.added,
                  outcome.duplicates, time.perf_counter() - started)
        return outcome


async def _heartbeats(settings: Settings, transport: ZmqPublisher, publisher: Publisher) -> None:
    every = settings.zmq.heartbeat_interval
    if every <= 0:
        return
    while True:
        await asyncio.sleep(every)
        transport.drain_subscriptions()
        topic, payload = heartbeat.build(
            settings.topic_prefix, settings.publisher.name, settings.username,
            publisher.sent_seq, settings.zmq.replay or None,
        )
        transport.send_now(topic, payload)


async def serve(settings: Settings, stop: asyncio.Event | None = None,
                ready: Callable[[], None] | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT). Raises on a start-up failure."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    store = runtime.open_store(settings)
    spool = runtime.open_spool(settings)
    try:
        spool.ensure()
    except OSError as exc:
        raise StoreError(f"cannot create the spool {spool.root}: {exc.strerror}") from None
    context = zmq.asyncio.Context()
    closers: list[Callable[[], object]] = [lambda: context.destroy(0)]
    tasks: list[asyncio.Task[None]] = []
    try:
        transport = ZmqPublisher(context, settings.zmq.publish, sndhwm=settings.zmq.sndhwm,
                                 hwm_wait_ms=settings.zmq.hwm_wait_ms)
        closers.insert(0, transport.close)
        publisher = Publisher(store, transport)
        watcher = SpoolWatcher(spool, store, settings, publisher.notify)
        tasks += [asyncio.create_task(publisher.run(), name="publisher"),
                  asyncio.create_task(watcher.run(), name="spool"),
                  asyncio.create_task(_heartbeats(settings, transport, publisher),
                                      name="heartbeat")]
        if settings.zmq.replay:
            replay = ReplayServer(context, settings.zmq.replay, store,
                                  settings.zmq.replay_max_messages)
            closers.insert(0, replay.close)
            tasks.append(asyncio.create_task(replay.serve(), name="replay"))
        if settings.smtp.enabled:
            from gateway.smtp import SmtpListener

            listener = SmtpListener(settings, spool, watcher.notify)
            await listener.start()
            closers.insert(0, listener.stop)
        from gateway import scheduler

        def poll_added() -> None:
            loop.call_soon_threadsafe(publisher.notify)

        jobs = scheduler.start(settings, store, poll_added)
        if jobs is not None:
            closers.insert(0, lambda: jobs.shutdown(wait=False))
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        log.info("busgate %s publishing on %s, replay on %s, spool %s",
                 settings.publisher.name, settings.zmq.publish, settings.zmq.replay or "(off)",
                 spool.root)
        if ready:
            ready()
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception():
                raise task.exception()  # type: ignore[misc]
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for close in closers:
            result = close()
            if inspect.isawaitable(result):
                await result
        store.close()
        log.info("busgate stopped")
