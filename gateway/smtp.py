"""The SMTP listener inside ``busgate run`` (aiosmtpd, in the daemon's event loop).

Same promise as the MTA pipe: ``250`` only after the mail is fsync'd in the
spool, ``451`` (try again later) whenever it could not be stored or anything
unexpected went wrong, never aiosmtpd's default ``500`` for an internal error
(a 5xx makes the sending MTA bounce the mail, i.e. lose it for us). ``552``
for a mail above ``mail.max_size``, both when the client declares it (``MAIL
FROM ... SIZE=``) and when the data turns out bigger; ``550`` for a recipient
not in ``smtp.recipients``. The fsync runs in a worker thread so a slow disk
does not stall the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import weakref
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.config import Settings
from gateway.errors import ConfigError, SpoolError
from gateway.spool import Spool

log = logging.getLogger(__name__)

#: How long :meth:`SmtpListener.stop` lets mails being stored finish before hanging up.
STOP_GRACE = 10.0


class SmtpListener:
    """aiosmtpd server bound to ``smtp.host:smtp.port``; call :meth:`start` inside the loop."""

    def __init__(self, settings: Settings, spool: Spool, notify: Callable[[], None]):
        recipients = {r.strip().lower() for r in settings.smtp.recipients if r.strip()}
        if not recipients:
            raise ConfigError("the SMTP listener needs at least one address in smtp.recipients",
                              key="smtp.recipients")
        if settings.smtp.timeout <= 0:
            raise ConfigError(f"must be greater than 0, not {settings.smtp.timeout}",
                              key="smtp.timeout")
        self.host = settings.smtp.host
        self.port = settings.smtp.port
        self.hostname = settings.smtp.hostname or socket.gethostname()
        self.timeout = settings.smtp.timeout
        self.max_size = settings.mail.max_size
        self.handler = _Handler(spool, notify, recipients, self.max_size)
        self._server: asyncio.AbstractServer | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def sockets(self) -> list[Any]:
        return list(self._server.sockets) if self._server else []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._protocol, host=self.host,
                                                    port=self.port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}",
                              key="smtp.port") from None
        log.info("SMTP listener on %s:%d for %s", self.host, self.port,
                 ", ".join(sorted(self.handler.recipients)))

    def _protocol(self) -> SMTP:
        session = SMTP(self.handler, data_size_limit=self.max_size, enable_SMTPUTF8=True,
                       hostname=self.hostname, ident="busgate ESMTP", timeout=self.timeout,
                       loop=asyncio.get_running_loop())
        self._sessions.add(session)
        return session

    async def stop(self) -> None:
        """Stop accepting, let mails being stored finish (bounded), then hang up on clients."""
        if self._server is None:
            return
        self._server.close()
        await self.handler.wait_idle(STOP_GRACE)
        for session in list(self._sessions):
            transport = getattr(session, "transport", None)
            if transport is not None:
                transport.close()
        await self._server.wait_closed()
        self._server = None


class _Handler:
    """aiosmtpd hooks: recipient check, durable store, and no 5xx on internal errors."""

    def __init__(self, spool: Spool, notify: Callable[[], None], recipients: set[str],
                 max_size: int):
        self.spool = spool
        self.notify = notify
        self.recipients = recipients
        self.max_size = max_size
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address.strip().lower() not in self.recipients:
            return f"550 5.1.1 <{address}>: recipient not accepted here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session,
                          envelope: Envelope) -> str:
        data = envelope.original_content or b""
        if len(data) > self.max_size:  # aiosmtpd checks too; this is the contract
            return "552 5.3.4 message exceeds the size limit"
        self._busy += 1
        self._idle.clear()
        try:
            path = await asyncio.to_thread(self.spool.deliver, "mail", data)
        except (SpoolError, OSError) as exc:
            log.error("SMTP: cannot store a mail from %s: %s", envelope.mail_from, exc)
            return "451 4.3.0 cannot store the mail now, try again later"
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()
        try:
            self.notify()
        except Exception:  # the mail is stored; the spool watcher also polls
            log.exception("SMTP: notify() failed after storing %s", os.path.basename(path))
        return f"250 2.0.0 OK queued as {os.path.basename(path)}"

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP: internal error: %r", error, exc_info=error)
        return "451 4.3.0 internal error, try again later"

    async def wait_idle(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("SMTP: %d mail(s) still being stored at shutdown", self._busy)
