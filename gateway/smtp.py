"""The SMTP listener inside ``busgate run`` (aiosmtpd, in the daemon's event loop).

Same promise as the MTA pipe: ``250`` only after the mail is fsync'd in the
spool, ``451`` (try again later) whenever it could not be stored or anything
unexpected went wrong, never aiosmtpd's default ``500`` for an internal error
(a 5xx makes the sending MTA bounce the mail, i.e. lose it for us). ``552``
for a mail above ``mail.max_size``, both when the client declares it (``MAIL
FROM ... SIZE=``) and when the data turns out bigger; ``550`` for a recipient
not in ``smtp.recipients``. The fsync runs in a worker thread so a slow disk
does not stall the loop.

Anyone who reaches the port is bounded before anything is allocated for
them: connections (:mod:`gateway.smtp_gate`, also kept within the
descriptor limit), recipients per mail (``452``), commands per connection
(aiosmtpd's ``command_call_limit``, ``421``), bytes per mail and bytes of
all unfinished mails (streamed DATA, :mod:`gateway.smtp_data`), idle and
total time (:mod:`gateway.smtp_session`), and the log lines they cause
(:mod:`gateway.ratelog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import weakref
from collections.abc import Callable
from typing import IO, Any

from aiosmtpd.smtp import SMTP, Session

from gateway import ratelog
from gateway.config import Settings
from gateway.errors import ConfigError, SpoolError
from gateway.smtp_data import InflightBudget
from gateway.smtp_gate import ConnectionGate, session_room
from gateway.smtp_session import BoundedEnvelope, BoundedSession
from gateway.spool import Spool

log = logging.getLogger(__name__)
#: aiosmtpd's logger: per-command chatter at INFO, per-client warnings; both a client controls.
AIOSMTPD_LOG = logging.getLogger("mail.log")

#: How long :meth:`SmtpListener.stop` lets mails being stored finish before hanging up.
STOP_GRACE = 10.0
#: Connections the kernel may queue before the accept loop takes them.
BACKLOG = 128
#: Socket receive buffer of a session (the kernel doubles it): about what one read brings in.
RECEIVE_BUFFER = 64 * 1024
_POSITIVE = ("timeout", "session_timeout", "max_connections", "max_recipients",
             "max_commands", "max_inflight_bytes")


class SmtpListener:
    """aiosmtpd sessions on ``smtp.host:smtp.port``; call :meth:`start` inside the loop."""

    def __init__(self, settings: Settings, spool: Spool, notify: Callable[[], None]):
        smtp = settings.smtp
        recipients = {r.strip().lower() for r in smtp.recipients if r.strip()}
        if not recipients:
            raise ConfigError("the SMTP listener needs at least one address in smtp.recipients",
                              key="smtp.recipients")
        for key in _POSITIVE:
            if getattr(smtp, key) <= 0:
                raise ConfigError(f"must be greater than 0, not {getattr(smtp, key)}",
                                  key=f"smtp.{key}")
        if smtp.fd_reserve < 0:
            raise ConfigError(f"must be 0 or more, not {smtp.fd_reserve}", key="smtp.fd_reserve")
        self.settings = smtp
        self.host = smtp.host
        self.port = smtp.port
        self.hostname = smtp.hostname or socket.gethostname()
        self.max_size = settings.mail.max_size
        self.spool = spool
        self.budget = InflightBudget(smtp.max_inflight_bytes)
        self.handler = _Handler(spool, notify, recipients, smtp.max_recipients)
        self.gate: ConnectionGate | None = None
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        ratelog.limit(log)
        ratelog.limit(AIOSMTPD_LOG)
        if not AIOSMTPD_LOG.isEnabledFor(logging.DEBUG):
            AIOSMTPD_LOG.setLevel(logging.WARNING)  # its INFO lines are one per command

    @property
    def sockets(self) -> list[Any]:
        return [self._sock] if self._sock is not None else []

    async def start(self) -> None:
        self._sock = self._listen()
        limit = self.settings.max_connections
        room = session_room(self.settings.fd_reserve)
        if room is not None and room < limit:
            if room < 1:
                self._sock.close()
                self._sock = None
                raise ConfigError("no file descriptors left for SMTP sessions under "
                                  "RLIMIT_NOFILE; raise the limit or lower smtp.fd_reserve",
                                  key="smtp.fd_reserve")
            log.warning("SMTP: RLIMIT_NOFILE leaves room for %d sessions, fewer than "
                        "smtp.max_connections = %d; taking at most %d", room, limit, room)
            limit = room
        self.gate = ConnectionGate(self._sock, limit, self._connect)
        self._accepting = asyncio.create_task(self.gate.serve(), name="smtp-accept")
        log.info("SMTP listener on %s:%d for %s (at most %d connections)", self.host, self.port,
                 ", ".join(sorted(self.handler.recipients)), limit)

    def _listen(self) -> socket.socket:
        try:
            infos = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                              key="smtp.port") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}",
                              key="smtp.port") from None
        return sock

    async def _connect(self, conn: socket.socket, closed: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        # one read takes what the kernel holds: a small window bounds each session's buffer
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        await loop.connect_accepted_socket(lambda: self._protocol(closed), conn)

    def _protocol(self, closed: Callable[[], None]) -> SMTP:
        session = BoundedSession(
            self.handler, spill_file=self._spill_file, budget=self.budget,
            session_timeout=self.settings.session_timeout, on_close=closed,
            data_size_limit=self.max_size, enable_SMTPUTF8=True, hostname=self.hostname,
            ident="busgate ESMTP", timeout=self.settings.timeout,
            command_call_limit=self.settings.max_commands, loop=asyncio.get_running_loop())
        self._sessions.add(session)
        return session

    def _spill_file(self) -> IO[bytes]:
        """An unnamed file in the spool's tmp/ (gone by itself if the daemon dies)."""
        try:
            return tempfile.TemporaryFile(dir=self.spool.tmp)
        except FileNotFoundError:
            self.spool.ensure()
            return tempfile.TemporaryFile(dir=self.spool.tmp)

    async def stop(self) -> None:
        """Stop accepting, let mails being stored finish (bounded), then hang up on clients."""
        if self._sock is None:
            return
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        self._sock.close()
        self._sock = None
        if self.gate is not None:
            self.gate.refused.flush()
        await self.handler.wait_idle(STOP_GRACE)
        for session in list(self._sessions):
            transport = getattr(session, "transport", None)
            if transport is not None:
                transport.close()
        await asyncio.sleep(0)  # let connection_lost run


class _Handler:
    """aiosmtpd hooks: recipient check, durable store, and no 5xx on internal errors."""

    def __init__(self, spool: Spool, notify: Callable[[], None], recipients: set[str],
                 max_recipients: int):
        self.spool = spool
        self.notify = notify
        self.recipients = recipients
        self.max_recipients = max_recipients
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: BoundedEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        envelope.rcpt_attempts += 1
        if envelope.rcpt_attempts > self.max_recipients:
            return "452 4.5.3 too many recipients"
        if address.strip().lower() not in self.recipients:
            return f"550 5.1.1 <{address}>: recipient not accepted here"
        if address not in envelope.rcpt_tos:  # at most len(recipients) entries
            envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session,
                          envelope: BoundedEnvelope) -> str:
        sink = envelope.data
        assert sink is not None and sink.state == "ok"  # the session answered 552/452 itself
        self._busy += 1
        self._idle.clear()
        try:
            path = await asyncio.to_thread(self.spool.deliver, "mail", sink.chunks())
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
            async with asyncio.timeout(timeout):  # not wait_for: it can lose a cancel
                await self._idle.wait()
        except TimeoutError:
            log.warning("SMTP: %d mail(s) still being stored at shutdown", self._busy)
