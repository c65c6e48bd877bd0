"""One SMTP connection: aiosmtpd's protocol with a streamed DATA and time bounds.

aiosmtpd keeps the SMTP grammar, the replies and ``command_call_limit``
(``smtp.max_commands``); this subclass changes only what has no bound there:
DATA is streamed (:mod:`gateway.smtp_data`), the idle timer also runs while
DATA bytes arrive, a connection has a total time limit
(``smtp.session_timeout``), and a timed-out client hears ``421`` before the
listener hangs up instead of a silent close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import IO, Any

from aiosmtpd.smtp import MISSING, SMTP, Envelope, syntax

from gateway import ratelog
from gateway.smtp_data import DataSink, InflightBudget, read_data

log = logging.getLogger(__name__)
ratelog.limit(log)

TIMEOUT_REPLY = b"421 4.4.2 timeout, closing connection\r\n"
SESSION_REPLY = b"421 4.4.2 session time limit reached, closing connection\r\n"


class BoundedEnvelope(Envelope):
    """aiosmtpd's envelope plus what the limits count: RCPT tries and the streamed data."""

    def __init__(self) -> None:
        super().__init__()
        self.rcpt_attempts = 0
        self.data: DataSink | None = None


class BoundedSession(SMTP):
    """See the module docstring. ``on_close`` runs once when the connection is gone."""

    def __init__(self, handler: Any, *, spill_file: Callable[[], IO[bytes]],
                 budget: InflightBudget,
                 session_timeout: float, on_close: Callable[[], None], **options: Any):
        super().__init__(handler, **options)
        self._spill_file = spill_file
        self._budget = budget
        self._session_timeout = session_timeout
        self._on_close: Callable[[], None] | None = on_close
        self._session_timer: asyncio.TimerHandle | None = None

    def _create_envelope(self) -> BoundedEnvelope:
        return BoundedEnvelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._session_timer is None:
            self._session_timer = self.loop.call_later(self._session_timeout, self._hang_up,
                                                       SESSION_REPLY)

    def connection_lost(self, error: Exception | None) -> None:
        if self._session_timer is not None:
            self._session_timer.cancel()
        try:
            super().connection_lost(error)
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()

    def _timeout_cb(self) -> None:
        self._hang_up(TIMEOUT_REPLY)

    def _hang_up(self, reply: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(reply)  # type: ignore[attr-defined]
            transport.close()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA checks and replies, with the content streamed to a :class:`DataSink`."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert isinstance(envelope, BoundedEnvelope)
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        sink = DataSink(self._spill_file, self.data_size_limit or 0, self._budget)
        try:
            try:
                await read_data(self._reader, sink.write, self._reset_timeout,
                                lambda: sink.state == "ok")
            except asyncio.IncompleteReadError:  # the client left mid-DATA: nothing to answer
                if self.transport is not None:
                    self.transport.close()
                return
            if sink.state == "too big":
                status: Any = "552 5.3.4 message exceeds the size limit"
            elif sink.state == "no room":
                status = "452 4.3.1 insufficient system storage, try again later"
            elif sink.state == "failed":
                log.error("SMTP: cannot spool a mail being received: %s", sink.error)
                status = "451 4.3.0 cannot store the mail now, try again later"
            else:
                envelope.data = sink
                status = await self._call_handler_hook("DATA")
                if status is MISSING:
                    status = "451 4.3.0 nothing stored the mail, try again later"
        finally:
            envelope.data = None
            sink.close()
        self._set_post_data_state()
        await self.push(status)
