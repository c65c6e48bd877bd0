"""Drain the outbox to a transport in seq_id order, and record what was handed over.

The published cursor is written after each batch. A crash between a send and
that write re-sends the tail of the batch on restart: the same envelopes, same
``msg_id`` and ``seq_id``, which subscribers drop as already seen. Nothing
stored is ever skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.store import PUBLISHED_CURSOR, Store
from gateway.transports import Transport
from gateway.wakeup import wait_set

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, store: Store, transport: Transport, *, batch: int = 2000):
        self.store = store
        self.transport = transport
        self.batch = batch
        self.wake = asyncio.Event()
        self.sent_seq = store.published_seq_id()
        self.sent = 0
        self.dropped = 0

    def heartbeat(self, build: Callable[[int], tuple[bytes, bytes]]) -> None:
        """Send a heartbeat through this publisher's transport, at once and lossily.
        ``build(seq_id)`` makes its frames from the last ``seq_id`` handed over here, so
        a subscriber of this transport sees a gap at the tail."""
        topic, payload = build(self.sent_seq)
        self.transport.send_now(topic, payload)

    def notify(self) -> None:
        """New rows may be in the outbox (safe to call from the loop thread only)."""
        self.wake.set()

    async def run(self) -> None:
        send_many = getattr(self.transport, "try_send_many", None)
        recording: asyncio.Future[None] | None = None  # the cursor write in flight
        unrecorded = [0, 0]  # sent and dropped since the last cursor write began
        while True:
            rows = self.store.frames_after(self.sent_seq, self.batch)
            if not rows:
                if recording is not None or unrecorded[0]:  # record it all before idling
                    if recording is not None:
                        await recording
                    recording = None
                    if unrecorded[0]:
                        await asyncio.to_thread(self._record, self.sent_seq, *unrecorded)
                        unrecorded = [0, 0]
                    continue
                self.wake.clear()
                rows = self.store.frames_after(self.sent_seq, self.batch)
                if not rows:
                    await wait_set(self.wake, 1.0)
                    continue
            dropped = await self._send(rows, send_many)
            self.sent_seq = rows[-1][0]
            self.sent += len(rows)
            self.dropped += dropped
            unrecorded[0] += len(rows)
            unrecorded[1] += dropped
            # The cursor write waits for the spool worker's transaction (one write lock)
            # and for its fsync: sending goes on meanwhile, and the next write records
            # every batch sent since. A crash re-sends what was not recorded, as before.
            if recording is None or recording.done():
                if recording is not None:
                    recording.result()  # a store error stops the publisher, as it did
                recording = asyncio.ensure_future(
                    asyncio.to_thread(self._record, self.sent_seq, *unrecorded))
                unrecorded = [0, 0]

    async def _send(self, rows: list[tuple[int, bytes, bytes]],
                    send_many: Callable[[list[tuple[int, bytes, bytes]], int], int] | None,
                    ) -> int:
        """Hand ``rows`` over in order, the stored bytes as they are; returns the drops."""
        # The transport counts drops per message and receiver (one lossy send can make
        # a stalled subscriber miss many); lossy transports without a count give one per
        # failed send.
        counted = getattr(self.transport, "dropped", None)
        dropped = 0
        position = 0
        while position < len(rows):
            if send_many is not None:  # as many as go without waiting, in one call
                position += send_many(rows, position)
                if position == len(rows):
                    break
            elif self.transport.try_send(rows[position][1], rows[position][2]):
                position += 1
                continue
            _, topic, payload = rows[position]
            if not await self.transport.send(topic, payload):
                dropped += 1
            position += 1
        if counted is not None:
            dropped = self.transport.dropped - counted  # type: ignore[attr-defined]
        return dropped

    def _record(self, seq_id: int, sent: int, dropped: int) -> None:
        with self.store.transaction() as tx:
            tx.set_cursor(PUBLISHED_CURSOR, seq_id)
            tx.bump("published.sent", sent)
            if dropped:
                tx.bump("published.dropped", dropped)
