"""``busgate run``: one asyncio loop wiring publisher, replay, heartbeat, SMTP
listener and pollers around the one state database, plus the spool worker
process that fills the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import sqlite3
from collections.abc import Callable

import zmq
import zmq.asyncio

from gateway import health, heartbeat, retention, runtime
from gateway.config import Settings
from gateway.errors import StoreError
from gateway.publisher import Publisher
from gateway.replay import ReplayServer
from gateway.spoolworker import SpoolWorker
from gateway.store import Store, state_error
from gateway.transports.peers import PeerLimits
from gateway.transports.zmq import ZmqPublisher

log = logging.getLogger(__name__)

#: How long a stopping daemon waits for its tasks to end. Past it the tasks still
#: running are named in the log and left behind: the spool worker must still be
#: stopped and the exit code given (a daemon that spins instead of stopping is worse).
STOP_GRACE = 5.0
#: A task that swallowed its cancel (``asyncio.wait_for`` on Python 3.11 can, when
#: what it waits for ends in the same loop turn) is cancelled again this often.
RECANCEL_EVERY = 0.1


async def _heartbeats(settings: Settings, publisher: Publisher, epoch: str) -> None:
    """Every ``zmq.heartbeat_interval`` seconds, a heartbeat through the publisher (and so
    its transport), carrying the last seq_id that publisher handed over."""
    every = settings.zmq.heartbeat_interval
    if every <= 0:  # disabled: wait forever (a task that ends would end the daemon)
        await asyncio.Event().wait()

    signer = publisher.store.factory.signer if publisher.store.factory else None

    def build(seq_id: int) -> tuple[bytes, bytes]:
        return heartbeat.build(settings.topic_prefix, settings.publisher.name,
                               settings.username, seq_id, settings.zmq.replay or None, epoch,
                               signer)

    while True:
        await asyncio.sleep(every)
        publisher.heartbeat(build)


async def _watch_state(store: Store, every: float = 1.0) -> None:
    """End the daemon (StateLostError, exit 69) when its database file is deleted or
    replaced: every later write would go to a file nobody reads."""
    while True:
        await asyncio.sleep(every)
        store.verify()


async def _guard_peers(guarded: list[Callable[[], None]], every: float = 0.02) -> None:
    """Hang up on remote peers over their limits, often enough that a flood stays small."""
    while True:
        await asyncio.sleep(every)
        for check in guarded:
            check()


async def _end_tasks(tasks: list[asyncio.Task[None]], grace: float = STOP_GRACE,
                     every: float = RECANCEL_EVERY) -> set[asyncio.Task[None]]:
    """Cancel ``tasks`` until they end, for ``grace`` seconds at most; returns those that
    did not. A task that swallowed one cancel is cancelled again instead of being
    awaited forever."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(every, left))
    for task in tasks:  # what they raised was reported already, or is of no interest now
        if task.done() and not task.cancelled():
            task.exception()
    return pending


def _peer_limits(settings: Settings) -> tuple[PeerLimits, PeerLimits]:
    conf = settings.zmq
    publish = PeerLimits(max_bytes=conf.max_peer_subscription_bytes, bytes_per_second=64,
                         max_total_bytes=conf.max_total_subscription_bytes,
                         max_peers=conf.max_subscribers)
    replay = PeerLimits(max_bytes=conf.replay_max_peer_bytes, max_peers=conf.replay_max_peers)
    return publish, replay


def _start_zmq(settings: Settings, store: Store, notifies: list[Callable[[], None]],
               closers: list[Callable[[], object]], tasks: list[asyncio.Task[None]]) -> None:
    """ZeroMQ's part of the daemon: the PUB socket and its outbox publisher, heartbeats,
    the replay server and the peer guard (none of it when ``zmq.enabled = false``)."""
    context = zmq.asyncio.Context()
    closers.append(lambda: context.destroy(0))
    publish_limits, replay_limits = _peer_limits(settings)
    transport = ZmqPublisher(context, settings.zmq.publish, sndhwm=settings.zmq.sndhwm,
                             hwm_wait_ms=settings.zmq.hwm_wait_ms,
                             max_subscription_bytes=settings.zmq.max_subscription_bytes,
                             peer_limits=publish_limits)
    closers.insert(0, transport.close)
    guarded: list[Callable[[], None]] = [transport.guard_peers]
    publisher = Publisher(store, transport)
    notifies.append(publisher.notify)
    tasks += [asyncio.create_task(publisher.run(), name="publisher"),
              asyncio.create_task(_heartbeats(settings, publisher, store.epoch()),
                                  name="heartbeat")]
    if settings.zmq.replay:
        replay = ReplayServer(context, settings.zmq.replay, store,
                              settings.zmq.replay_max_messages,
                              max_bytes=settings.zmq.replay_max_bytes,
                              max_request_bytes=settings.zmq.replay_max_request_bytes,
                              peer_limits=replay_limits)
        closers.insert(0, replay.close)
        guarded.append(replay.guard_peers)
        tasks.append(asyncio.create_task(replay.serve(), name="replay"))
    tasks.append(asyncio.create_task(_guard_peers(guarded), name="peers"))


def _transports(settings: Settings) -> list[str]:
    """What the start-up line names: each enabled transport's address."""
    from gateway.transports.amqp import redacted

    names = []
    if settings.zmq.enabled:
        names.append(f"{settings.zmq.publish} (replay on {settings.zmq.replay or '(off)'})")
    if settings.amqp.enabled:
        names.append(f"{redacted(settings.amqp.url)} exchange {settings.amqp.exchange}")
    return names


async def serve(settings: Settings, stop: asyncio.Event | None = None,
                ready: Callable[[], None] | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT). Raises on a start-up failure."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    store = runtime.open_store(settings)
    with store.transaction() as tx:  # a read-only or full state fails here, not later
        tx.bump("daemon.started")
    spool = runtime.open_spool(settings)
    try:
        spool.ensure()
    except OSError as exc:
        raise StoreError(f"cannot create the spool {spool.root}: {exc.strerror}") from None
    try:
        runtime.adopt(settings, store, spool)
        health.clear_all(settings.state_dir)
    except OSError as exc:
        raise StoreError(f"cannot mark the spool {spool.root} and state directory "
                         f"{settings.state_dir}: {exc.strerror}") from None
    closers: list[Callable[[], object]] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        notifies: list[Callable[[], None]] = []
        if settings.zmq.enabled:
            _start_zmq(settings, store, notifies, closers, tasks)
        if settings.amqp.enabled:
            from gateway import amqp_outbox

            amqp = amqp_outbox.make(settings, store, notifies)
            tasks.append(asyncio.create_task(amqp.run(), name="amqp"))

        def notify() -> None:
            for wake in notifies:
                wake()

        worker = SpoolWorker(settings, notify)
        worker.start()
        closers.insert(0, worker.stop)
        tasks += [asyncio.create_task(worker.supervise(), name="spool"),
                  asyncio.create_task(_watch_state(store), name="state")]
        if retention.enabled(settings.state):  # a task that ends would end the daemon
            tasks.append(asyncio.create_task(retention.run(store, settings),
                                             name="retention"))
        if settings.smtp.enabled:
            from gateway.smtp import SmtpListener

            listener = SmtpListener(settings, spool, worker.notify)
            await listener.start()
            closers.insert(0, listener.stop)
        if settings.history.enabled:  # the recorder ([history]), in a thread of its own
            from gateway.history.recorder import RecorderThread

            recorder = RecorderThread(settings)
            recorder.start()
            closers.insert(0, recorder.stop)
        from gateway import scheduler

        def poll_added() -> None:
            loop.call_soon_threadsafe(notify)

        jobs = scheduler.start(settings, store, poll_added)
        if jobs is not None:
            closers.insert(0, lambda: jobs.shutdown(wait=False))
        if settings.metrics.enabled:  # /metrics, /live, /ready ([metrics])
            from gateway import metrics

            exporter = metrics.MetricsServer(settings)
            closers.insert(0, exporter.close)
            tasks.append(asyncio.create_task(metrics.ticker(exporter), name="metrics"))
            exporter.ready()
            log.info("metrics on http://%s:%d/metrics", settings.metrics.host, exporter.port)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        log.info("busgate %s publishing on %s, spool %s", settings.publisher.name,
                 ", ".join(_transports(settings)), spool.root)
        if ready:
            ready()
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception():
                exc = task.exception()
                if isinstance(exc, sqlite3.Error):  # e.g. the publisher reading a corrupt file
                    exc = state_error(f"{task.get_name()}: state database failed", exc)
                if isinstance(exc, StoreError):
                    health.Reporter(settings.state_dir, "daemon", log).fault(str(exc),
                                                                             fatal=True)
                raise exc  # type: ignore[misc]
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        stuck = await _end_tasks(tasks)
        if stuck:
            log.error("task(s) %s still running %.0f s after the stop; stopping without them",
                      ", ".join(sorted(task.get_name() for task in stuck)), STOP_GRACE)
        for close in closers:
            result = close()
            if inspect.isawaitable(result):
                await result
        store.close()
        log.info("busgate stopped")
