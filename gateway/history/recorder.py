"""``busgate record``: store every message of the bus in the history, once.

The recorder is a :class:`~gateway.consumer.Consumer` whose position file *is* the
history database: a sequenced ZeroMQ message is written through ``delivery.db``,
inside the transaction that also moves the position, so a kill -9 at any point
leaves either both or neither, and the restarted recorder resumes by replay right
after the last message stored. What can still come twice (an AMQP redelivery after a
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
from gateway.history.records import record_of
from gateway.history.store import BATCH, SqliteHistory

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


class Recorder:
    """Stores what a consumer hands it; :meth:`run` is the loop."""

    def __init__(self, settings: Settings, store: SqliteHistory, *,
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

    def consumer(self) -> Consumer:
        from gateway.consumer import Consumer

        if self.amqp_queue:
            return Consumer(self.settings, index=self.index, amqp_queue=self.amqp_queue,
                            name="history")
        endpoints = self.endpoints if self.endpoints is not None \
            else endpoints_of(self.settings)
        history = self.settings.history
        return Consumer(self.settings, index=self.index, endpoints=endpoints, name="history",
                        position_path=self.store.path, batch=history.batch_messages,
                        batch_seconds=history.batch_ms / 1000,
                        before_commit=self.store.flush_text, after_rollback=self.store.forget)

    def handle(self, delivery: Delivery) -> None:
        """Store one message: in the position's transaction when there is one (its text
        at the batch's end when that transaction is a batch), else in a transaction of
        its own."""
        record = record_of(delivery.envelope, self.index)
        if delivery.db is not None:
            try:
                added = (self.store.stage if delivery.batched else self.store.add)(
                    delivery.db, record)
            except BaseException:
                self.store.forget_names()  # the consumer rolls this message back
                raise
        else:
            db = self.store.writer()
            db.execute("BEGIN IMMEDIATE")
            try:
                added = self.store.add(db, record)
            except BaseException:
                db.execute("ROLLBACK")
                self.store.forget()
                raise
            db.execute("COMMIT")
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
        return handled


def _outbox_rows(outbox: Store, after: int) -> Iterator[tuple[int, str]]:
    while True:
        rows = outbox.rows_after(after, BATCH)
        if not rows:
            return
        for row in rows:
            yield row.seq_id, row.envelope
        after = rows[-1].seq_id


def backfill(settings: Settings, store: SqliteHistory, outbox: Store,
             index: TypeIndex | None = None) -> tuple[int, int]:
    """Copy ``outbox`` (the gateway's own) into the history; ``(read, added)``. The
    recorder's position for this publisher moves past what was copied (never back)."""
    import orjson

    from gateway import envelope as env
    from gateway import sources

    index = index if index is not None else sources.type_index(settings)
    publisher, epoch = settings.publisher.name, outbox.epoch()
    position = Position(store.path)
    try:
        mine = position.load().get(publisher)
        behind = mine is None or mine[0] != epoch
        db = position.db
        read = added = 0
        batch: list[tuple[int, dict[str, Any]]] = []

        def flush() -> None:
            nonlocal added
            try:
                with position.transaction():
                    added += sum(store.add(db, record_of(envelope, index))
                                 for _, envelope in batch)
                    last = batch[-1][0]
                    if behind or (mine is not None and last > mine[1]):
                        position.advance(publisher, epoch, last)
            except BaseException:
                store.forget()
                raise
            batch.clear()

        for seq_id, text in _outbox_rows(outbox, 0):
            read += 1
            batch.append((seq_id, env.check(orjson.loads(text))))
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
                store = SqliteHistory(self.settings.history_path,
                                      query_timeout=self.settings.history.query_timeout,
                                      cache_mb=self.settings.history.cache_mb)
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
