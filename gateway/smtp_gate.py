"""The SMTP listener's accept loop: a connection cap that fits the file-descriptor limit.

asyncio's ``create_server`` accepts whatever arrives and, on EMFILE, logs a
traceback per failed accept; some other part of the daemon (ZeroMQ aborts on
EMFILE) then dies for want of a descriptor. This loop accepts itself, so it
can keep within a number of sessions chosen at start from ``RLIMIT_NOFILE``
minus the descriptors in use and ``smtp.fd_reserve``: one connection past
the cap is answered ``421`` and closed at once, synchronously (it holds its
descriptor for microseconds), and counted in one log line a minute rather
than one per refusal. If accept still fails for want of descriptors, the loop
waits and tries again; it never ends the daemon.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
from collections.abc import Callable
from typing import Any

from gateway import ratelog

log = logging.getLogger(__name__)
#: Failed accepts: a few lines, then about one a minute.
accept_log = logging.getLogger(f"{__name__}.accept")
ratelog.limit(accept_log, burst=3, per_second=1 / 60)

#: Descriptors one session may hold: its socket and the file a large mail spills to.
FDS_PER_SESSION = 2
#: Pause after an accept that failed for want of descriptors or memory.
ACCEPT_BACKOFF = 0.5
REFUSE_REPLY = b"421 4.3.2 too many connections, try again later\r\n"


def session_room(reserve: int) -> int | None:
    """Sessions that fit in the descriptors this process has left, or None without a limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc: count nothing, the reserve still applies
        in_use = 0
    return max(0, (soft - in_use - reserve) // FDS_PER_SESSION)


class ConnectionGate:
    """Accepts on ``sock`` and hands at most ``limit`` live connections to ``connect``."""

    def __init__(self, sock: socket.socket, limit: int,
                 connect: Callable[[socket.socket, Callable[[], None]], Any]):
        self.sock = sock
        self.limit = limit
        self.active = 0
        self._connect = connect
        self.refused = ratelog.Tally(log, "SMTP: refused %d connection(s) over the limit of "
                             f"{limit} at once (421) since the last report")

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:  # never fatal: EMFILE and the like pass
                if exc.errno != errno.ECONNABORTED:
                    accept_log.warning("SMTP: cannot accept a connection: %s; waiting",
                                       os.strerror(exc.errno) if exc.errno else exc)
                    await asyncio.sleep(ACCEPT_BACKOFF)
                continue
            if self.active >= self.limit:
                self._refuse(conn)
                continue
            self.active += 1
            try:
                await self._connect(conn, self._closed)
            except OSError as exc:
                self._closed()
                conn.close()
                accept_log.warning("SMTP: cannot start a session: %s", exc)

    def _closed(self) -> None:
        self.active -= 1

    def _refuse(self, conn: socket.socket) -> None:
        try:
            conn.send(REFUSE_REPLY)
        except OSError:
            pass  # the client is gone already; nothing to tell
        finally:
            conn.close()
        self.refused.note()
