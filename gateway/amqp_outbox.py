"""Drain the outbox to RabbitMQ with pipelined publisher confirms, on a cursor of its own.

ZeroMQ's publisher (:mod:`gateway.publisher`) records what it handed to the socket
(``publisher.sent``). This one records ``publisher.amqp.sent``: the highest
``seq_id`` such that the broker confirmed it *and every row before it*. Up to
``amqp.confirm_window`` messages are in flight at once; confirms come back in any
order and the cursor moves over the confirmed prefix only. The two cursors are
independent, so a broker outage never holds ZeroMQ back.

When the connection dies, the in-memory confirmed prefix is where sending starts
again after the reconnect: only the messages unconfirmed at the failure are sent a
second time (same ``message_id``), and the log names their ``seq_id`` range. After
a crash of the process the durable cursor is at most ``RECORD_EVERY`` seconds
behind what was confirmed, so those are resent too. Reconnects back off (doubling,
jittered, between ``amqp.reconnect_min`` and ``reconnect_max``); the outage sets a
health flag ``busgate status`` shows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiormq

from gateway import health
from gateway.config import Settings
from gateway.store import AMQP_CURSOR, OutboxRow, Store
from gateway.transports.amqp import (
    CONNECTION_ERRORS,
    AmqpError,
    AmqpTransport,
    check_confirm,
    redacted,
)
from gateway.transports.amqp_wire import TypeLookup, WireMessage, to_amqp
from gateway.wakeup import wait_set

log = logging.getLogger(__name__)

#: Part of the confirm window that must be free before more rows are read and sent.
REFILL_FRACTION = 0.125
#: Seconds between two writes of the cursor while confirms stream in (and at idle).
RECORD_EVERY = 0.1


class AmqpPublisher:
    def __init__(self, settings: Settings, store: Store, lookup: TypeLookup | None = None,
                 transport: AmqpTransport | None = None, *, cursor: str = AMQP_CURSOR):
        self.conf = settings.amqp
        self.store = store
        self.lookup = lookup
        self.transport = transport or AmqpTransport(self.conf)
        self.cursor = cursor
        self.wake = asyncio.Event()
        self.confirmed_seq = int(store.cursor(cursor) or 0)
        self.recorded_seq = self.confirmed_seq
        self.health = health.Reporter(settings.state_dir, "amqp", log)
        self._pending = collections.Counter[str]()
        #: ``(first, last)`` seq_id ranges that were unconfirmed when a connection died.
        self.resent_ranges: list[tuple[int, int]] = []
        #: Rows confirmed past the prefix when a connection died (seq_id -> routed):
        #: not sent again.
        self._ahead: dict[int, bool] = {}
        self.connected = asyncio.Event()
        #: Most messages ever in flight at once (at most ``amqp.confirm_window``).
        self.max_inflight = 0

    def notify(self) -> None:
        """New rows may be in the outbox (loop thread only)."""
        self.wake.set()

    async def run(self) -> None:
        delay = self.conf.reconnect_min
        try:
            while True:
                try:
                    await self.transport.connect()
                except (*CONNECTION_ERRORS, AmqpError) as exc:
                    wait = min(self.conf.reconnect_max, delay) * random.uniform(0.8, 1.2)
                    self.health.fault(f"cannot reach the AMQP broker at "
                                      f"{redacted(self.conf.url)}: {_why(exc)}",
                                      retry_in=self.conf.reconnect_max)
                    self._pending["amqp.connect_failed"] += 1
                    await self._record()
                    await asyncio.sleep(wait)
                    delay = min(self.conf.reconnect_max, delay * 2)
                    continue
                self.health.ok()
                self.connected.set()
                log.info("AMQP: publishing to %s exchange %s from seq_id %d",
                         redacted(self.conf.url), self.conf.exchange, self.confirmed_seq)
                start = self.confirmed_seq
                try:
                    await self._pump()
                except (*CONNECTION_ERRORS, AmqpError) as exc:
                    self.connected.clear()
                    self._pending["amqp.connection_lost"] += 1
                    self.health.fault(f"AMQP connection lost: {_why(exc)}",
                                      retry_in=self.conf.reconnect_max)
                    await self.transport.close()
                    await self._record()
                    # Progress on that connection: retry soon; none (a broker refusing
                    # every publish): back off like a failed connect.
                    delay = self.conf.reconnect_min if self.confirmed_seq > start \
                        else min(self.conf.reconnect_max, delay * 2)
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._record())
            await self.transport.close()

    async def _pump(self) -> None:
        window = self.conf.confirm_window
        refill = max(1, int(window * REFILL_FRACTION))
        transport = self.transport
        inflight: collections.deque[_Entry] = collections.deque()
        returned: list[_Entry] = []
        next_seq = self.confirmed_seq
        last_record = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not transport.is_open:
                    raise ConnectionError("the AMQP connection closed")
                rows: list[OutboxRow] = []
                # Refill in batches of at least REFILL_FRACTION of the window (one read,
                # one write), or at once when nothing is in flight (a lone event).
                if window - len(inflight) >= refill or not inflight:
                    rows = self.store.rows_after(next_seq, window - len(inflight))
                    batch: list[_Entry] = []
                    for row in rows:
                        if row.seq_id in self._ahead:
                            entry = _Entry(row.seq_id, loop.create_future(), None)
                            entry.future.set_result(None)
                            entry.unroutable = not self._ahead.pop(row.seq_id)
                        else:
                            entry = _Entry(row.seq_id, None,
                                           to_amqp(json.loads(row.envelope), self.lookup))
                            batch.append(entry)
                        inflight.append(entry)
                    if batch:
                        await self._send(batch, returned)
                        self.max_inflight = max(self.max_inflight, len(inflight))
                    if rows:
                        next_seq = rows[-1].seq_id
                if returned:  # no queue was bound: keep them in the unroutable queue
                    again, returned[:] = list(returned), []
                    for entry in again:
                        entry.unroutable = True
                    await self._send(again, returned, unroutable=True)
                while inflight and inflight[0].future.done():
                    entry = inflight[0]
                    if entry.future.cancelled():
                        raise ConnectionError("a publish was cancelled")
                    exc = entry.future.exception()
                    if isinstance(exc, aiormq.exceptions.PublishError):
                        if entry.unroutable:
                            raise transport.unbound(entry.message)
                        break  # being sent to the alternate exchange (returned)
                    if exc is not None:
                        raise exc
                    if entry.message is not None:
                        check_confirm(entry.future.result(), entry.message)
                    inflight.popleft()
                    self.confirmed_seq = entry.seq_id
                    self._pending["amqp.confirmed"] += 1
                    if entry.unroutable:
                        self._pending["amqp.unroutable"] += 1
                now = time.monotonic()
                if self.confirmed_seq != self.recorded_seq and (
                        now - last_record >= RECORD_EVERY or not inflight):
                    last_record = now
                    await self._record()
                if returned:
                    continue
                if inflight and (len(inflight) >= window or not rows):
                    await asyncio.wait([inflight[0].future], timeout=1.0)
                elif not inflight:
                    self.wake.clear()
                    if not self.store.rows_after(next_seq, 1):
                        await wait_set(self.wake, 1.0)
                else:
                    await asyncio.sleep(0)
        finally:
            # What was in flight is sent again from the confirmed prefix on, except what
            # the broker confirmed already (past a gap).
            for entry in inflight:
                if entry.future is not None and not entry.future.done():
                    entry.future.cancel()
            pending = []
            for entry in inflight:
                future = entry.future
                if future is None or future.cancelled() or future.exception() is not None:
                    pending.append(entry.seq_id)
                else:
                    self._ahead[entry.seq_id] = not entry.unroutable
            if pending:
                first, last = pending[0], pending[-1]
                self.resent_ranges.append((first, last))
                self._pending["amqp.unconfirmed_at_failure"] += len(pending)
                log.warning("AMQP: %d messages unconfirmed when the connection ended "
                            "(seq_id %d-%d); they are sent again after the reconnect",
                            len(pending), first, last)

    async def _send(self, batch: list[_Entry], returned: list[_Entry], *,
                    unroutable: bool = False) -> None:
        futures = await self.transport.publish_batch(
            [entry.message for entry in batch if entry.message is not None],
            unroutable=unroutable)
        for entry, future in zip(batch, futures, strict=True):
            entry.future = future
            if not unroutable:
                entry.returned = returned
                future.add_done_callback(entry.on_done)

    async def _record(self) -> None:
        seq_id, counts = self.confirmed_seq, dict(self._pending)
        if seq_id == self.recorded_seq and not counts:
            return
        self._pending.clear()
        await asyncio.to_thread(self._write, seq_id, counts)
        self.recorded_seq = seq_id

    def _write(self, seq_id: int, counts: dict[str, int]) -> None:
        with self.store.transaction() as tx:
            tx.set_cursor(self.cursor, seq_id)
            for name, n in counts.items():
                if n:
                    tx.bump(name, n)


class _Entry:
    """One outbox row in flight: its confirm future and its message (None when it was
    confirmed before a reconnect and is only counted now)."""

    __slots__ = ("future", "message", "returned", "seq_id", "unroutable")

    def __init__(self, seq_id: int, future: Any, message: WireMessage | None):
        self.seq_id = seq_id
        self.future: asyncio.Future[Any] = future  # None until written
        self.message = message
        self.unroutable = False
        self.returned: list[_Entry] | None = None

    def on_done(self, future: asyncio.Future[Any]) -> None:
        """A returned message (no queue bound) joins the list to send to the alternate
        exchange."""
        if self.returned is not None and not future.cancelled() and isinstance(
                future.exception(), aiormq.exceptions.PublishError):
            self.returned.append(self)


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def make(settings: Settings, store: Store, notify_list: list[Callable[[], None]]) -> AmqpPublisher:
    """The daemon's AMQP publisher, with the registry's message types for headers of
    envelopes stored without them."""
    from gateway import optional
    from gateway.sources import type_index

    optional.require("aiormq", "The AMQP transport (amqp.enabled = true)")

    index = type_index(settings)
    publisher = AmqpPublisher(settings, store, index.lookup)
    notify_list.append(publisher.notify)
    return publisher
