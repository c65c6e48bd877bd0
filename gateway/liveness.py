"""Is a daemon running on this state directory? A lock, not a pid file.

``busgate run`` holds an exclusive ``flock`` on ``<state>/busgate.lock`` for its whole
life and writes its pid there. The kernel drops the lock when the process dies (even
by ``kill -9``), so a stale pid can never make ``busgate status`` say "running", and a
second ``busgate run`` on the same state is refused at once instead of fighting over
the ports.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "busgate.lock"


class AlreadyRunning(Exception):
    """Another daemon holds the lock; ``pid`` is what it wrote (``None`` if unreadable)."""

    def __init__(self, pid: int | None):
        self.pid = pid
        super().__init__(f"a busgate daemon (pid {pid or '?'}) is already running here")


def hold(state_dir: str | os.PathLike[str]) -> int:
    """Take the lock for this process and write its pid; returns the descriptor to keep
    open (closing it releases the lock). Raises :class:`AlreadyRunning` or ``OSError``."""
    path = Path(state_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(_pid(path)) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def running(state_dir: str | os.PathLike[str]) -> int | None:
    """The pid of the daemon holding the lock (0 if it wrote none), or ``None`` when no
    daemon runs. Creates nothing and never takes the lock for longer than the test."""
    path = Path(state_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid(path) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace")[:32].strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
