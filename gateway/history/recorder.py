"""``busgate record``: store every message of the bus in the history, once.

The recorder is a :class:`~gateway.consumer.Consumer` whose position file *is* the
SQLite history database: a sequenced ZeroMQ message is written through
``delivery.db``, inside the transaction that also moves the position, so a kill -9 at
any point leaves either both or neither, and the restarted recorder resumes by replay
right after the last message stored. A PostgreSQL history commits each batch first
(:meth:`Recorder.flush`, the consumer's last step before its own commit) and the
position (a local file) after; :mod:`gateway.history.pgstore` says why that neither
loses nor doubles either. What can still come twice (an AMQP redelivery after a
kill between commit and ack, an unsequenced message, the same event from a publisher
whose state was wiped) is stored once by its ``msg_id``.

:func:`backfill` copies the gateway's own outbox into the history and moves the
position past it in the same transactions, so a recorder started afterwards goes on
from there without a gap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from gateway.consumer_state import Position
from gateway.discovery import Endpoint
from gateway.history import backends, jsonio
from gateway.history.records import record_of
from gateway.history.store import BATCH, HistoryError, HistoryStore

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.consumer import Consumer, Delivery
    from gateway.messages import TypeIndex
    from gateway.store import Store

log = logging.getLogger(__name__)

#: Seconds the recorder waits before starting again after a failure (``busgate run``).
RESTART_DELAY = 5.0
#: Seconds of one consumer slice: how soon a stop request is noticed.
SLICE = 0.5


def endpoints_of(settings: Settings, specs: list[str] | None = None) -> list[Endpoint]:
    """``PUB[,REPLAY]`` specs (``history.endpoints`` by default) as endpoints; none given:
    discovery's (this gateway's own, by default)."""
    from gateway import discovery

    specs = list(settings.history.endpoints) if specs is None else specs
    if not specs:
        return discovery.discover(settings)
    found = []
    for number, spec in enumerate(specs, 1):
        publish, _, replay = spec.partition(",")
        found.append(Endpoint(f"history-{number}", publish.strip(), replay.strip() or None))
    return found


def _unreachable(exc: Exception) -> bool:
    """``exc`` means "the history server is not there right now", not "this message is
    bad" (psycopg is loaded already when the history is PostgreSQL)."""
    import sys

    psycopg = sys.modules.get("psycopg")
    return isinstance(exc, HistoryError) or (
        psycopg is not None and isinstance(exc, psycopg.OperationalError))


def _forget(store: HistoryStore, *, names_only: bool = False) -> None:
    """After a rollback: the SQLite writer's caches may name rows that are gone."""
    forget = getattr(store, "forget_names" if names_only else "forget", None)
    if forget is not None:
        forget()


class Recorder:
    """Stores what a consumer hands it; :meth:`run` is the loop."""

    def __init__(self, settings: Settings, store: HistoryStore, *,
                 index: TypeIndex | None = None, endpoints: list[Endpoint] | None = None,
                 amqp_queue: str | None = None):
        from gateway import sources

        self.settings = settings
        self.store = store
        self.index = index if index is not None else sources.type_index(settings)
        self.endpoints = endpoints
        self.amqp_queue = amqp_queue if amqp_queue is not None \
            else (settings.history.amqp_queue or None)
        #: Messages stored, and messages already there (by msg_id).
        self.stored = 0
        self.known = 0
        self._tuned: object = None
        #: Records of the open batch for a store elsewhere (PostgreSQL), written by
        #: :meth:`flush`; at most ``history.batch_messages`` (the consumer's batch).
        self._staged: list[Any] = []
        #: Records of the open batch staged in a store that holds the position (SQLite).
        self._in_batch = 0

    def consumer(self) -> Consumer:
        from gateway.consumer import Consumer

        if self.amqp_queue:
            return Consumer(self.settings, index=self.index, amqp_queue=self.amqp_queue,
                            name="history")
        endpoints = self.endpoints if self.endpoints is not None \
            else endpoints_of(self.settings)
        return Consumer(self.settings, index=self.index, endpoints=endpoints, name="history",
                        position_path=backends.position_path(self.settings, self.store),
                        **self._batching())

    def _batching(self) -> dict[str, Any]:
        """Batches: in the position's transaction when the store holds the position
        (SQLite: one file, one transaction); a store elsewhere (PostgreSQL) commits the
        batch in :meth:`flush`, before the consumer commits its position past it."""
        from gateway.history.store import SqliteHistory

        history = self.settings.history
        batching = {"batch": history.batch_messages, "batch_seconds": history.batch_ms / 1000}
        if isinstance(self.store, SqliteHistory):  # handle() stages; flush writes
            return {**batching, "before_commit": lambda db: self.flush(db),
                    "after_rollback": self._rolled_back, "batch_savepoints": False,
                    "after_commit": self.store.committed}
        return {**batching, "before_commit": lambda db: self.flush(),
                "after_rollback": self._rolled_back}

    def _rolled_back(self) -> None:
        self._staged.clear()
        self._in_batch = 0
        _forget(self.store)

    def flush(self, db: Any = None) -> None:
        """Write the open batch: SQLite, in the position's transaction ``db``; a store
        elsewhere, committed there (its own transactions) before the position moves
        past it. The store unreachable: :class:`NotHandled` (the position stays). Any
        other failure: each message again in a transaction of its own, so one a server
        refuses is logged and left out, not retried forever with its batch."""
        from gateway.consumer import NotHandled

        if self.store.position_path is not None:
            staged, self._in_batch = self._in_batch, 0
            added = self.store.flush(db)  # type: ignore[attr-defined]
            self.stored += added
            self.known += staged - added
            return
        staged = self._staged[:]
        if not staged:
            return
        try:
            added = self.store.add_many(staged)
        except Exception as exc:
            _forget(self.store)
            if _unreachable(exc):
                raise NotHandled(f"history database {self.store.where}: {exc}") from exc
            log.warning("history: a batch of %d failed (%s); storing them one by one",
                        len(staged), exc)
            added = sum(self._add_alone(record) for record in staged)
        self._staged.clear()
        self.stored += added
        self.known += len(staged) - added

    def _add_alone(self, record: Any) -> bool:
        from gateway.consumer import NotHandled

        try:
            with self.store.transaction() as db:
                return self.store.add(db, record)
        except Exception as exc:
            _forget(self.store)
            if _unreachable(exc):
                raise NotHandled(f"history database {self.store.where}: {exc}") from exc
            log.exception("history: message %s not stored", record.msg_id)
            return False

    def handle(self, delivery: Delivery) -> None:
        """Store one message: in the position's transaction when the store holds the
        position (written by :meth:`flush` at the batch's end when that transaction is a
        batch), staged for :meth:`flush` in a batch of a store elsewhere, else in a
        transaction of its own, committed before the position."""
        from gateway.consumer import NotHandled

        record = record_of(delivery.envelope, self.index, float_free=delivery.float_free)
        if delivery.batched and self.store.position_path is None:
            self._staged.append(record)  # counted when flush commits it
            return
        if delivery.db is not None and self.store.position_path is not None:
            if delivery.db is not self._tuned:  # the position's connection writes
                self.store.tune(delivery.db)  # type: ignore[attr-defined]
                self._tuned = delivery.db
            if delivery.batched:  # written and counted by flush
                self.store.stage(delivery.db, record)  # type: ignore[attr-defined]
                self._in_batch += 1
                return
            try:
                added = self.store.add(delivery.db, record)
            except BaseException:
                _forget(self.store, names_only=True)  # the consumer rolls this message back
                raise
        else:
            try:
                with self.store.transaction() as db:
                    added = self.store.add(db, record)
            except Exception as exc:
                _forget(self.store)
                if _unreachable(exc):  # not stored: the position must not pass it
                    raise NotHandled(f"history database {self.store.where}: {exc}") from exc
                raise
        if added:
            self.stored += 1
        else:
            self.known += 1

    def run(self, stop: threading.Event | None = None, *, count: int | None = None,
            timeout: float | None = None) -> int:
        """Record until ``stop`` is set, ``count`` messages were handled or ``timeout``
        seconds passed. Returns how many messages were handled."""
        import time

        stop = stop or threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout
        handled = 0
        self.store.start_indexer()  # SQLite: the index file fills behind the batches
        try:
            with self.consumer() as consumer:
                while not stop.is_set():
                    left = None if count is None else count - handled
                    if left is not None and left <= 0:
                        break
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        break
                    slice_ = SLICE if deadline is None else min(SLICE, deadline - now)
                    handled += consumer.run(self.handle, count=left, timeout=slice_)
        finally:  # what the last batches stored is found once run returns
            self.store.stop_indexer()
        return handled


def _outbox_rows(outbox: Store, after: int) -> Iterator[tuple[int, str]]:
    while True:
        rows = outbox.rows_after(after, BATCH)
        if not rows:
            return
        for row in rows:
            yield row.seq_id, row.envelope
        after = rows[-1].seq_id


def backfill(settings: Settings, store: HistoryStore, outbox: Store,
             index: TypeIndex | None = None) -> tuple[int, int]:
    """Copy ``outbox`` (the gateway's own) into the history; ``(read, added)``. The
    recorder's position for this publisher moves past what was copied (never back)."""
    from gateway import envelope as env
    from gateway import sources

    index = index if index is not None else sources.type_index(settings)
    publisher, epoch = settings.publisher.name, outbox.epoch()
    position = Position(backends.position_path(settings, store))
    try:
        mine = position.load().get(publisher)
        behind = mine is None or mine[0] != epoch
        db = position.db
        read = added = 0
        batch: list[tuple[int, dict[str, Any]]] = []

        def flush() -> None:
            nonlocal added
            records = [record_of(envelope, index) for _, envelope in batch]
            try:
                with position.transaction():
                    if store.position_path is not None:  # one transaction, one file
                        added += sum(store.add(db, record) for record in records)
                    else:  # committed in the store first, then the position
                        added += store.add_many(records)
                    last = batch[-1][0]
                    if behind or (mine is not None and last > mine[1]):
                        position.advance(publisher, epoch, last)
            except BaseException:
                _forget(store)
                raise
            batch.clear()
            store.committed()  # SQLite: searches find them as soon as committed

        for seq_id, text in _outbox_rows(outbox, 0):
            read += 1
            batch.append((seq_id, env.check(jsonio.loads(text))))
            if len(batch) >= BATCH:
                flush()
        if batch:
            flush()
        return read, added
    finally:
        position.close()


class RecorderThread:
    """The recorder inside ``busgate run`` (``history.enabled``): a thread that records
    until stopped, and starts again after a failure (logged) rather than end the daemon."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="history-recorder",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                store = backends.open_history(self.settings)
                try:
                    Recorder(self.settings, store).run(self._stop)
                finally:
                    store.close()
            except Exception:
                log.exception("history recorder failed; starting again in %g s",
                              RESTART_DELAY)
                self._stop.wait(RESTART_DELAY)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
