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
import stat
import time

from gateway.errors import SpoolError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

#: ``oversize`` is what ``busgate mail`` leaves for a mail over the limit: one JSON line
#: (kind, size, limit) and the mail's first bytes, so quarantine learns of it, bounded.
KINDS = ("events", "mail", "oversize")
#: Default of ``mail.max_size``; here so that ``busgate mail --spool`` knows it without
#: reading the configuration.
MAIL_MAX_SIZE = 20 * 1024 * 1024
#: Default of ``quarantine.oversize_keep_bytes``: the head of an oversize input that is kept.
OVERSIZE_KEEP = 64 * 1024
#: Where items that are not regular files are moved, out of ``new/``.
REJECTED = "rejected"
#: The file ``busgate run`` writes into the spool it reads (see :mod:`gateway.mark`).
MARK = ".busgate-spool"


class RejectedItem(Exception):
    """A spool entry that must not be parsed: not a regular file, unreadable, or too big.

    ``head`` holds at most the first bytes asked for (oversize only); ``size`` is
    what ``fstat`` said, when known. ``set_aside`` says the entry cannot simply be
    deleted (a directory, a FIFO...): move it to ``rejected/`` for the operator.
    """

    def __init__(self, reason: str, detail: str, *, head: bytes = b"", size: int | None = None,
                 set_aside: bool = False):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.head = head
        self.size = size
        self.set_aside = set_aside


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
        except BaseException:  # the data source gave up (e.g. an input over its limit)
            _unlink_quietly(tmp_path)
            raise
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
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:  # gone, or not ours to delete (a directory): leave it
                continue
        return removed

    @staticmethod
    def kind_of(path: Path) -> str:
        return path.name.rsplit(".", 1)[-1]

    @staticmethod
    def read_item(path: str | os.PathLike[str], max_bytes: int,
                  keep_bytes: int = OVERSIZE_KEEP) -> bytes:
        """The bytes of one item, never following a link, never blocking, never more
        than ``max_bytes``. Raises :class:`RejectedItem` (and FileNotFoundError when
        another reader took it): a FIFO, device, directory or symlink in ``new/``
        must not hang or exhaust the worker."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RejectedItem("not-regular", "a symbolic link, not a regular file",
                                   set_aside=True) from None
            raise RejectedItem("unreadable", f"cannot open: {os.strerror(exc.errno or 0)}",
                               set_aside=True) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise RejectedItem("not-regular", f"a {_file_type(info.st_mode)}, not a "
                                   "regular file", set_aside=True)
            if info.st_size > max_bytes:
                raise RejectedItem("oversize", f"{info.st_size} bytes, over the "
                                   f"{max_bytes}-byte limit", size=info.st_size,
                                   head=os.pread(fd, keep_bytes, 0))
            data = _read_at_most(fd, max_bytes + 1)
            if len(data) > max_bytes:  # grew after fstat
                raise RejectedItem("oversize", f"more than {max_bytes} bytes",
                                   head=data[:keep_bytes], size=len(data))
            return data
        except OSError as exc:
            raise RejectedItem("unreadable", f"cannot read: {os.strerror(exc.errno or 0)}",
                               set_aside=True) from None
        finally:
            os.close(fd)

    def set_aside(self, path: Path) -> bool:
        """Move an entry that cannot be parsed or deleted to ``rejected/``; False if not."""
        target = os.path.join(self._root, REJECTED)
        try:
            os.makedirs(target, exist_ok=True)
            os.rename(path, os.path.join(target, os.path.basename(path)))
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True

    @staticmethod
    def remove(path: Path) -> bool:
        """Delete a processed item; False when it cannot be (the caller must skip it)."""
        try:
            _unlink_quietly(path)
        except OSError:
            return False
        return True


def _read_at_most(fd: int, limit: int) -> bytes:
    parts = []
    while limit > 0:
        chunk = os.read(fd, min(limit, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        limit -= len(chunk)
    return b"".join(parts)


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


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
