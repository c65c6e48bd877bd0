"""The drop directory short-lived processes hand their input to.

Maildir rules: write to ``tmp/``, fsync the file, rename into ``new/``, fsync
the directory. Once :meth:`Spool.deliver` returns, the item survives a crash or
power loss, so the caller (MTA pipe, git hook, ``busgate publish``) may
acknowledge its source. This module imports only the standard library's
lightest parts, because ``busgate mail`` starts on every archive mail.
"""

from __future__ import annotations

import errno
import os
import time

from gateway.errors import SpoolError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

KINDS = ("events", "mail")
#: The file ``busgate run`` writes into the spool it reads (see :mod:`gateway.mark`).
MARK = ".busgate-spool"


class Spool:
    """A maildir-style spool. Paths are kept as strings so that ``busgate mail`` never
    imports pathlib; :attr:`root`, :attr:`tmp`, :attr:`new` give ``Path`` objects."""

    def __init__(self, root: str | os.PathLike[str]):
        self._root = os.fspath(root)
        self._tmp = os.path.join(self._root, "tmp")
        self._new = os.path.join(self._root, "new")

    @property
    def root(self) -> Path:
        from pathlib import Path

        return Path(self._root)

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def new(self) -> Path:
        return self.root / "new"

    def is_ready(self) -> bool:
        """Whether ``tmp/`` and ``new/`` exist (the daemon made this spool)."""
        return os.path.isdir(self._tmp) and os.path.isdir(self._new)

    def is_marked(self) -> bool:
        """Whether a daemon adopted this spool (:mod:`gateway.mark`): one ``stat``, no
        import (``busgate mail --spool`` runs this on every archive mail)."""
        try:
            os.stat(os.path.join(self._root, MARK))
        except OSError:
            return False
        return True

    def require_mark(self) -> None:
        """Raise :class:`SpoolError` unless a daemon reads this spool: a short-lived
        command must not report success for an item no one will ever publish."""
        if not self.is_marked():
            from gateway.mark import unmarked_spool_message

            raise SpoolError(unmarked_spool_message(self._root))

    def deliver(self, kind: str, data: bytes | Iterable[bytes]) -> str:
        """Durably store one item; return its path in ``new/``. Raises :class:`SpoolError`."""
        if kind not in KINDS:
            raise SpoolError(f"unknown spool item kind {kind!r}")
        name = f"{time.time_ns():020d}.{os.getpid()}.{os.urandom(4).hex()}.{kind}"
        tmp_path = os.path.join(self._tmp, name)
        try:
            fd = self._open_tmp(tmp_path)
        except OSError as exc:
            raise SpoolError(f"cannot create {tmp_path}: {os.strerror(exc.errno or 0)}") from exc
        try:
            try:
                chunks = (data,) if isinstance(data, bytes | bytearray | memoryview) else data
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            final = os.path.join(self._new, name)
            os.rename(tmp_path, final)
            _fsync_dir(self._new)
        except OSError as exc:
            _unlink_quietly(tmp_path)
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise SpoolError(f"cannot store spool item in {self._root}: {reason}") from exc
        return final

    def _open_tmp(self, path: str) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(path, flags, 0o640)
        except FileNotFoundError:
            self.ensure()
            return os.open(path, flags, 0o640)

    def ensure(self) -> None:
        """Create ``tmp/`` and ``new/``."""
        for directory in (self._tmp, self._new):
            os.makedirs(directory, exist_ok=True)

    def pending(self) -> list[Path]:
        """Items waiting in ``new/``, oldest first."""
        try:
            with os.scandir(self.new) as entries:
                names = sorted(e.name for e in entries if not e.name.startswith("."))
        except FileNotFoundError:
            return []
        return [self.new / n for n in names]

    def clean_tmp(self, older_than: float = 36 * 3600) -> int:
        """Remove stale ``tmp/`` files left by writers that died (maildir's 36 h rule)."""
        removed = 0
        cutoff = time.time() - older_than
        try:
            entries = list(os.scandir(self.tmp))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    @staticmethod
    def kind_of(path: Path) -> str:
        return path.name.rsplit(".", 1)[-1]

    @staticmethod
    def remove(path: Path) -> None:
        _unlink_quietly(path)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _unlink_quietly(path: str | os.PathLike[str]) -> None:
    try:  # noqa: SIM105 - contextlib costs busgate mail a millisecond of start-up
        os.unlink(path)
    except FileNotFoundError:
        pass
