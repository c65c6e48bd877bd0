"""Drain the spool into the outbox, in a process of its own.

Parsing inputs and building envelopes is CPU-bound Python. In the daemon's own
process it would take turns with the publisher under the GIL; in a child process
the two run on two cores. The child shares nothing with the parent but the state
database (SQLite serializes the writers) and two pipes: the parent wakes it when
the SMTP listener stored a mail, and it tells the parent when new rows are in the
outbox. It dies with its parent, and the parent restarts it if it dies alone.
Every step is idempotent (an item is deleted only after its events committed, and
a key is stored once), so a kill at any moment loses nothing and doubles nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

from gateway.config import Settings

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0
#: Longest wait between attempts to write a state database that refuses writes.
MAX_BACKOFF = 30.0
#: The worker's exit status when the state database is gone or corrupt (EX_UNAVAILABLE).
EXIT_STATE_LOST = 69
#: Threads deleting ingested spool items (see :class:`Removals`).
REMOVERS = 8
#: Most deletions queued at once; past it the worker waits for them.
MAX_QUEUED_REMOVALS = 10_000
#: Allocations between collections of young objects in the worker (CPython: 700).
YOUNG_GC_THRESHOLD = 20_000


def drain_forever(settings: Settings, parent_pid: int, wake: Connection, added: Connection,
                  log_level: int, owner: str = "") -> None:
    """Child process entry point: move spool items into the outbox until the parent goes."""
    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent stops us
    from gateway import health, ingest, runtime
    from gateway.attempts import Attempts
    from gateway.errors import StateLostError, StoreError
    from gateway.spool import Spool

    signal.signal(signal.SIGTERM, _stop)  # a stop is not a crash: let `finally` clean up

    # Both pipe ends this side holds must never block: draining an empty wake pipe
    # or signalling into a full one would stall ingestion for good.
    for conn in (wake, added):
        os.set_blocking(conn.fileno(), False)
    faults = health.Reporter(settings.state_dir, "spool-worker", log)
    store = _open_state(settings, faults, parent_pid)
    spool = runtime.open_spool(settings)
    spool.ensure()
    spool.clean_tmp()
    interval = settings.state.spool_poll_ms / 1000
    backoff = 0.0
    stuck: set[str] = set()  # items that could be neither removed nor set aside
    attempts = Attempts(spool.root, settings.ingest.max_crashes, owner)
    removals = Removals()
    quiet_gc()
    while os.getppid() == parent_pid:
        try:
            store.verify()
        except StateLostError as exc:
            _lost(faults, exc)
        stuck.update(removals.failed())
        skip = stuck | removals.in_flight()  # before the scan: see Removals.in_flight
        items = [path for path in spool.pending() if path.name not in skip]
        added_any = False

        def done(path: Path, outcome: ingest.Outcome) -> None:
            """The outcome is durable: the entry may go (and only now)."""
            nonlocal added_any
            if outcome.added or outcome.duplicates:  # redone harmlessly if the delete is lost
                removals.submit(path)
            elif not (spool.set_aside(path) if outcome.set_aside else Spool.remove(path)):
                stuck.add(path.name)
            log.debug("%s: %d event(s) added, %d duplicate(s)", path.name, outcome.added,
                      outcome.duplicates)
            added_any = added_any or bool(outcome.added)

        position = 0
        while position < len(items):
            run = list(itertools.takewhile(
                lambda p: attempts.groupable(p.name),
                items[position:position + max(settings.ingest.group_items, 1)]))
            try:
                with no_collection():
                    if len(run) > 1:  # many small items: one transaction for them all
                        ingest.ingest_group(store, settings, run, attempts, done)
                        position += len(run)
                    else:  # alone, or suspected of killing a worker: under its own mark
                        path = items[position]
                        position += 1
                        with contextlib.suppress(FileNotFoundError):
                            done(path, ingest.ingest_item(store, settings, path, attempts))
            except StateLostError as exc:
                _lost(faults, exc)
            except StoreError as exc:  # disk full, read-only, I/O error: may be fixed
                backoff = min(max(backoff * 2, 0.5), MAX_BACKOFF)
                faults.fault(f"cannot store spool items: {exc}", retry_in=MAX_BACKOFF)
                store.close()  # reconnect next time: a read-only open is sticky
                time.sleep(backoff)
                break
            backoff = 0.0
            faults.ok()
            if added_any:
                added_any = False
                _signal(added)
        if not items and wake.poll(interval):
            _drain(wake)


class Removals:
    """Deletes ingested spool items on a few threads, off the worker's path.

    Deleting a file whose blocks were fsynced waits on the filesystem's journal: 2.4 ms
    a file on this project's ext4 (``discard``), so one event per item spent most of the
    worker's time in ``unlink``. Deletions in flight together share those waits, and
    parsing and committing go on meanwhile. Only items whose events are committed go
    here: a delete lost in a crash means the item is read again and its keys are found
    stored (nothing doubles); a quarantined or set-aside item is removed at once.
    """

    def __init__(self, threads: int = REMOVERS, limit: int = MAX_QUEUED_REMOVALS,
                 remove: Callable[[Path], bool] | None = None):
        from concurrent.futures import ThreadPoolExecutor

        from gateway.spool import Spool

        self._remove = remove or Spool.remove
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="spool-remove")
        self._lock = threading.Lock()
        self._room = threading.BoundedSemaphore(limit)
        self._pending: set[str] = set()
        self._failed: set[str] = set()

    def submit(self, path: Path) -> None:
        """Queue ``path`` for deletion; waits while ``limit`` deletions are queued."""
        self._room.acquire()
        with self._lock:
            self._pending.add(path.name)
        self._pool.submit(self._run, path)

    def _run(self, path: Path) -> None:
        removed = False
        try:
            removed = self._remove(path)
        finally:
            with self._lock:
                self._pending.discard(path.name)
                if not removed:
                    self._failed.add(path.name)
            self._room.release()

    def in_flight(self) -> set[str]:
        """Names queued or being deleted. Taken before a scan of ``new/``, it covers every
        listed item that is on its way out (a deletion that ends after the scan was in
        flight before it); one that ends during the scan may go unlisted, or be listed
        and then found gone, which ingest skips."""
        with self._lock:
            return set(self._pending)

    def failed(self) -> set[str]:
        """Names that could not be deleted since the last call (the worker skips them)."""
        with self._lock:
            failed, self._failed = self._failed, set()
        return failed

    def wait(self) -> None:
        """Until every queued deletion is done (and no more may be queued)."""
        self._pool.shutdown(wait=True)


def quiet_gc() -> None:
    """Keep the cycle collector off what start-up made (modules, schemas, settings).

    Parsing a 10,000-event item makes ~500,000 containers, which set off collections
    that walk every object alive, start-up's included: a third of the parse time on a
    dak body. Frozen objects are never walked again; parsed JSON makes no cycles, so
    collecting young objects less often frees nothing later than it must."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """No cycle collection while spool items are ingested (as it was before, after).

    The events of a bulk item stay alive until their transaction commits: each young
    collection meanwhile walks them all again, ~7% of the worker's CPU on dak bodies
    even with :func:`quiet_gc`'s threshold. Parsed JSON and envelopes make no cycles;
    reference counting frees them, and whatever cycle an error made is collected once
    this is left."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _stop(signum: int, frame: object) -> None:
    """The first SIGTERM ends the worker through its cleanup; later ones are ignored.
    Why: systemd signals every process of the service and the daemon then stops its
    worker too, and a second SystemExit raised inside the first one's cleanup (an exit
    hook) left a traceback in the journal at every stop."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(0)


def _open_state(settings: Settings, faults, parent_pid: int):  # type: ignore[no-untyped-def]
    """The daemon's database, never a new one: the file must still be the one the
    daemon opened (its identity is in the state mark). Backs off while it cannot be
    opened; exits 69 when it is gone, replaced or corrupt."""
    from gateway import mark, runtime
    from gateway.errors import StateLostError, StoreError

    backoff = 0.0
    while True:
        try:
            if not settings.db_path.exists():
                raise StateLostError(f"the state database {settings.db_path} was deleted")
            store = runtime.open_store(settings, create=False)
            expected = (mark.read_state(settings.state_dir) or {}).get("database_identity")
            if expected and tuple(expected) != store.identity:
                raise StateLostError(f"the state database {store.path} is not the file the "
                                     "daemon opened (deleted or replaced)")
            return store
        except StateLostError as exc:
            _lost(faults, exc)
        except StoreError as exc:
            if os.getppid() != parent_pid:
                os._exit(0)
            backoff = min(max(backoff * 2, 0.5), MAX_BACKOFF)
            faults.fault(str(exc), retry_in=MAX_BACKOFF)
            time.sleep(backoff)


def _lost(faults, exc: Exception) -> None:  # type: ignore[no-untyped-def]
    """The state cannot be used any more: flag it and exit 69 (the daemon stops too)."""
    import sys

    faults.fault(str(exc), fatal=True)
    sys.exit(EXIT_STATE_LOST)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill us when the parent dies (``kill -9`` included)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _signal(conn: Connection) -> None:
    """One byte down a pipe; a full pipe already says it (non-blocking, never waits)."""
    with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
        os.write(conn.fileno(), b"\0")


def _drain(conn: Connection) -> bool:
    """Read what waits in the pipe; False once its writer is gone (end of file)."""
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(conn.fileno(), 4096):
            pass
        return False
    return True


class SpoolWorker:
    """The parent's handle on the child: start, watch, restart, stop."""

    def __init__(self, settings: Settings, on_added: Callable[[], None]):
        self.settings = settings
        self.on_added = on_added
        #: This daemon run's token in crash marks (see :mod:`gateway.attempts`): a worker
        #: restarted by this daemon counts its predecessor's death, a new daemon does not.
        self.owner = uuid.uuid4().hex
        self.process: multiprocessing.process.BaseProcess | None = None
        self._wake: Connection | None = None
        self._added: Connection | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        wake_r, self._wake = context.Pipe(duplex=False)
        self._added, added_w = context.Pipe(duplex=False)
        for conn in (self._wake, self._added):
            os.set_blocking(conn.fileno(), False)
        self.process = context.Process(
            target=drain_forever, name="busgate-spool",
            args=(self.settings, os.getpid(), wake_r, added_w,
                  logging.getLogger().getEffectiveLevel(), self.owner),
            daemon=True,
        )
        self.process.start()
        wake_r.close()
        added_w.close()
        asyncio.get_running_loop().add_reader(self._added.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._added is not None
        if not _drain(self._added):
            # The child is gone (its end of the pipe closed). The end of file would be
            # readable on every loop turn: a busy loop, and a wake-up of the publisher on
            # each turn, until supervise() noticed. It restarts the child (new pipes).
            asyncio.get_running_loop().remove_reader(self._added.fileno())
        self.on_added()

    def notify(self) -> None:
        """Wake the child now (a mail was just spooled by the SMTP listener)."""
        if self._wake is not None:
            _signal(self._wake)

    async def supervise(self) -> None:
        """Restart the child if it dies on its own."""
        while True:
            await asyncio.sleep(0.5)
            if self.process is not None and not self.process.is_alive():
                if self.process.exitcode == EXIT_STATE_LOST:
                    from gateway import health
                    from gateway.errors import StateLostError

                    flag = health.read(self.settings.state_dir).get("spool-worker", {})
                    raise StateLostError(flag.get("problem") or "the spool worker found the "
                                         "state database unusable")
                log.error("spool worker exited with status %s; restarting it",
                          self.process.exitcode)
                self.stop()
                await asyncio.sleep(RESTART_DELAY)
                self.start()

    def stop(self) -> None:
        if self._added is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._added.fileno())
        if self.process is not None and self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)
        for conn in (self._wake, self._added):
            if conn is not None:
                conn.close()
        self._wake = self._added = None
