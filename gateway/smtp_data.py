"""SMTP DATA read as a stream, so that no mail is ever held whole in memory.

aiosmtpd's own DATA keeps every line of a mail in a list until the final dot
(a 19 MB mail of short lines costs several times 19 MB); 100 unfinished
sessions took the daemon to 2 GB. Here the DATA bytes go through in blocks:
the end marker (RFC 5321 4.1.1.4) and the transparency dot (4.5.2) are found
across block boundaries, and :class:`DataSink` keeps the first
:data:`SPILL_AT` bytes in memory and the rest in an unnamed file in the spool's
``tmp/`` (gone by itself if the daemon dies), charging those bytes to an
:class:`InflightBudget` shared by all sessions. A mail over its size limit, or
one the budget has no room for, is read to its end and dropped (no memory
grows), so the reply can still be a clean 552/452 on a live session.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import IO

#: The end of DATA: a line holding only a dot.
END = b"\r\n.\r\n"
#: Bytes of a mail kept in memory; beyond, the mail goes to a file in spool/tmp.
SPILL_AT = 64 * 1024
#: Bytes per read of a spilled mail when it is copied into the spool.
COPY_BLOCK = 1024 * 1024


class InflightBudget:
    """Bytes of unfinished mails on disk, all sessions together (``smtp.max_inflight_bytes``)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class DataSink:
    """Where one mail's content goes while it arrives; see the module docstring.

    ``state`` ends as ``"ok"``, ``"too big"`` (over ``max_size``: 552), ``"no room"``
    (over the in-flight budget: 452) or ``"failed"`` (the spill file could not be
    written: 451). ``open_file`` makes the unnamed spill file. Call :meth:`close` always.
    """

    def __init__(self, open_file: Callable[[], IO[bytes]], max_size: int,
                 budget: InflightBudget):
        self.open_file = open_file
        self.error: OSError | None = None
        self.max_size = max_size
        self.budget = budget
        self.state = "ok"
        self.size = 0
        self._memory: list[bytes] = []
        self._buffered = 0
        self._charged = 0
        self._file: IO[bytes] | None = None

    async def write(self, block: bytes) -> None:
        if self.state != "ok" or not block:
            return
        self.size += len(block)
        if self.size > self.max_size:
            self._drop("too big")
            return
        self._memory.append(block)
        self._buffered += len(block)
        if self.size > SPILL_AT and self._buffered >= SPILL_AT:
            await self._spill()

    async def _spill(self) -> None:
        if not self.budget.take(self._buffered):
            self._drop("no room")
            return
        self._charged += self._buffered
        data = b"".join(self._memory)
        self._memory.clear()
        self._buffered = 0
        try:
            if self._file is None:
                self._file = await asyncio.to_thread(self.open_file)
            await asyncio.to_thread(self._file.write, data)
        except OSError as exc:  # keep reading to the end of DATA, then answer 451
            self.error = exc
            self._drop("failed")

    def _drop(self, state: str) -> None:
        self.state = state
        self._memory.clear()
        self._buffered = 0
        self.close()

    def chunks(self) -> Iterator[bytes]:
        """The mail's bytes in order; iterate in a worker thread (blocking reads).

        The iterator reads through a descriptor of its own, so :meth:`close`
        (a session cancelled while its mail is being stored) cannot pull the
        file from under the thread still copying it.
        """
        spilled = None
        if self._file is not None:
            self._file.flush()
            spilled = os.fdopen(os.dup(self._file.fileno()), "rb")
        return _replay(spilled, list(self._memory))

    def close(self) -> None:
        """Release the file and the budget; idempotent, synchronous (runs on cancellation)."""
        if self._charged:
            self.budget.give(self._charged)
            self._charged = 0
        if self._file is not None:
            file, self._file = self._file, None
            file.close()


async def read_data(reader: asyncio.StreamReader, write: Callable[[bytes], Awaitable[None]],
                    progress: Callable[[], None],
                    wanted: Callable[[], bool] = lambda: True) -> None:
    """Read DATA from ``reader`` up to the lone dot, giving ``write`` the unstuffed content.

    Never reads past the end marker, so a pipelined next command stays in
    ``reader``. Uses ``readuntil(END)``: when the stream limit stops it, the
    bytes it says are safe are taken and the search goes on, so memory stays
    at one network read. ``progress`` is called on every read (idle timer);
    once ``wanted()`` is false the content is only skipped, not unstuffed.
    """
    unstuff = _Unstuffer()
    pending = b"\r\n"  # the line start before the first line (the DATA command's CRLF)
    while True:
        end = -1
        if pending:  # a marker may be cut here: read exactly what would complete it
            data = pending + await reader.readexactly(len(END) - len(pending))
            end = data.find(END)
        else:
            try:
                data = await reader.readuntil(END)
                end = len(data) - len(END)
            except asyncio.LimitOverrunError as exc:  # no marker in what it gives
                data = await reader.read(exc.consumed)
        progress()
        if end >= 0:  # found only at the very end: nothing was read past it
            if wanted():
                await write(unstuff.feed(data[:end + 2], final=True))
            return
        keep = _partial_end(data)
        if wanted():
            await write(unstuff.feed(data[:len(data) - keep] if keep else data))
        pending = data[len(data) - keep:] if keep else b""


def _partial_end(data: bytes) -> int:
    """Length of the longest tail of ``data`` that starts an end marker."""
    for size in range(len(END) - 1, 0, -1):
        if data.endswith(END[:size]):
            return size
    return 0


class _Unstuffer:
    """Drops the dot a client doubles at the start of a line (RFC 5321 4.5.2), in a
    stream cut anywhere; the first two bytes fed (the virtual line start) are not output."""

    def __init__(self) -> None:
        self._tail = b""
        self._skip = 2

    def feed(self, data: bytes, final: bool = False) -> bytes:
        data = self._tail + data
        keep = 0
        if not final:
            keep = 2 if data.endswith(b"\r\n") else 1 if data.endswith(b"\r") else 0
        self._tail = data[len(data) - keep:] if keep else b""
        out = data[:len(data) - keep].replace(b"\r\n.", b"\r\n")
        if self._skip and out:
            cut = min(self._skip, len(out))
            out = out[cut:]
            self._skip -= cut
        return out


def _replay(spilled: IO[bytes] | None, memory: list[bytes]) -> Iterator[bytes]:
    if spilled is not None:
        with spilled:
            spilled.seek(0)
            while block := spilled.read(COPY_BLOCK):
                yield block
    yield from memory
