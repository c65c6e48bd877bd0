"""Where a consumer stands: the last seq_id it handled per publisher and epoch.

A consumer that restarts (or is killed) resumes from here: the ZeroMQ
:class:`~gateway.subscriber.Subscriber` is seeded with these positions and asks
each publisher's replay endpoint for what came after, so nothing is lost. The
position is written in the same SQLite transaction as whatever the consumer's
callback writes through :attr:`Position.db` (a recorder's rows), so a kill between
the two cannot double a message either; a callback with effects outside this
file (printing, IRC) gets at-least-once, each message carrying its
``(publisher, publisher_epoch, seq_id)`` to tell a repeat.

One small file per consumer (``<state dir>/<name>.sqlite``, WAL): committing a
message costs no fsync (``synchronous=NORMAL`` survives a killed process; a
power cut may lose the last commits, which replay brings back).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

#: A consumer's name is a file name in the state directory.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Publishers a position file may hold; one more is refused (a consumer facing an
#: endless stream of forged publisher names must not grow without bound).
MAX_PUBLISHERS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS position (
    publisher TEXT PRIMARY KEY,
    epoch TEXT,
    seq_id INTEGER NOT NULL
);
"""


class PositionError(Exception):
    """The position file cannot be used (corrupt, unwritable, over its bounds)."""


def path_for(state_dir: str | os.PathLike[str], name: str) -> Path:
    """The position file of consumer ``name`` under ``state_dir``."""
    if not NAME_PATTERN.fullmatch(name):
        raise PositionError(f"consumer name {name!r} must match {NAME_PATTERN.pattern}")
    return Path(state_dir) / f"{name}.sqlite"


class Position:
    """The positions of one consumer, in its own SQLite file."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None,
                                      check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise PositionError(f"cannot open the consumer state {self.path}: {exc}") \
                from None
        self._cache = self.load()

    def load(self) -> dict[str, tuple[str | None, int]]:
        """Publisher -> (epoch, last seq_id handled)."""
        try:
            rows = self.db.execute("SELECT publisher, epoch, seq_id FROM position").fetchall()
        except sqlite3.Error as exc:
            raise PositionError(f"cannot read {self.path}: {exc}") from None
        return {publisher: (epoch, int(seq)) for publisher, epoch, seq in rows}

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: a callback's rows and the position commit together."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def advance(self, publisher: str, epoch: str | None, seq_id: int) -> None:
        """Record ``seq_id`` of ``publisher`` as handled (inside :meth:`transaction`)."""
        if publisher not in self._cache and len(self._cache) >= MAX_PUBLISHERS:
            raise PositionError(f"{self.path} already tracks {MAX_PUBLISHERS} publishers "
                                f"(consumer_state.MAX_PUBLISHERS); not adding {publisher!r}")
        self.db.execute(
            "INSERT INTO position (publisher, epoch, seq_id) VALUES (?, ?, ?) "
            "ON CONFLICT (publisher) DO UPDATE SET epoch = excluded.epoch, "
            "seq_id = excluded.seq_id", (publisher, epoch, seq_id))
        self._cache[publisher] = (epoch, seq_id)

    def forget(self) -> None:
        """Re-read the positions (after a rollback undid moves :meth:`advance` cached)."""
        self._cache = self.load()

    def close(self) -> None:
        self.db.close()
