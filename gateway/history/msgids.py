"""Exact msg_id dedup for the SQLite history, whose writes stay in the newest ids.

msg_ids are random (uuid5 of an event's key, or any publisher's string), so a unique
index on msg_id alone made every batch dirty about one random leaf per message once
the index outgrew the page cache (1,293 pages a batch of 1,000 at 1,000,000 stored).
The index is keyed ``(id >> RUN_BITS, msg_id)`` instead (006_msg_id_runs.sql): SQLite
refuses a repeat within one *run* of 4,096 consecutive ids, and a batch writes only in
the newest run's leaves.

Runs below the newest are complete (a new row takes ``max(id) + 1``) and summarised by
Bloom filters, one per :data:`GROUP_RUNS` runs (table ``msg_id_filters``, the same
filters :mod:`gateway.dedup` keeps of the outbox, keyed by the msg_id's 16-byte BLAKE2b).
A msg_id a filter may hold is looked up in that filter's runs through the index, so
dedup stays exact; a false positive (about 0.2%) costs probes, never a message. A run
joins its filter at the first batch written past its end (sealing: one read of the run
through the index, one write of the filter). :meth:`MsgIds.find` (``/id``) uses the
same filters, so it probes a few runs, not every one.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence

from gateway import dedup

RUN_BITS = 12
#: The indexed expression: queries spell it exactly so for SQLite to use the index.
RUN_EXPR = "id >> 12"
#: Runs per filter: 262,144 ids.
GROUP_RUNS = 64
#: Bits per filter (512 KiB, rewritten when a run is sealed: 128 bytes an id): 16 bits
#: an id and :data:`gateway.dedup.HASHES` hashes give ~0.24% false positives. The
#: filters in memory: 2 bytes a stored message.
FILTER_BITS = 1 << 22
MASK = FILTER_BITS - 1
#: Runs named in one probe statement (the statement's text stays small).
PROBE_RUNS = 500


def key(msg_id: str) -> bytes:
    """The filter key of ``msg_id``: any string, so hashed (a uid's bytes need not be)."""
    return hashlib.blake2b(msg_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def run_of(row_id: int) -> int:
    return row_id >> RUN_BITS


def _filter_rows(db: sqlite3.Connection) -> list[tuple[int, int]]:
    return db.execute("SELECT grp, upto_run FROM msg_id_filters ORDER BY grp").fetchall()


def _present(db: sqlite3.Connection, msg_ids: Sequence[str], runs: Iterable[int],
             columns: str = "msg_id") -> list[tuple[object, ...]]:
    """Rows (``columns``) of ``msg_ids`` in ``runs``: one index probe per pair."""
    runs = list(runs)
    found: list[tuple[object, ...]] = []
    if not msg_ids or not runs:
        return found
    for start in range(0, len(runs), PROBE_RUNS):
        listed = ",".join(str(int(r)) for r in runs[start:start + PROBE_RUNS])
        for part in range(0, len(msg_ids), 500):
            chunk = list(msg_ids[part:part + 500])
            found += db.execute(
                f"SELECT {columns} FROM messages WHERE {RUN_EXPR} IN ({listed})"  # noqa: S608
                f" AND msg_id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
    return found


def _runs_with_rows(db: sqlite3.Connection, low: int, high: int) -> Iterator[int]:
    """The runs from ``low`` to ``high`` (inclusive) holding a row, in order: a gap in
    the ids (rows by hand, far ahead) is stepped over, not walked run by run."""
    run = low
    while run <= high:
        (found,) = db.execute("SELECT MIN(id) FROM messages WHERE id >= ?",
                              (run << RUN_BITS,)).fetchone()
        if found is None or run_of(found) > high:
            return
        yield run_of(found)
        run = run_of(found) + 1


def _top_run(db: sqlite3.Connection) -> int | None:
    (top,) = db.execute("SELECT MAX(id) FROM messages").fetchone()
    return None if top is None else run_of(top)


class MsgIds:
    """The history's msg_id dedup and look-up; this process's copy of the filters."""

    def __init__(self) -> None:
        self.filters = dedup.Filters("msg_id_filters")

    def stored(self, db: sqlite3.Connection, msg_ids: Sequence[str], first_id: int,
               count: int) -> set[str]:
        """Which of ``msg_ids`` (distinct) are stored where the unique index will not
        see them when ``count`` rows from id ``first_id`` on are inserted: in complete
        runs, and in ``first_id``'s run too when the rows spill into the next. Runs in
        the caller's write transaction (it seals the runs below ``first_id``'s)."""
        open_run = run_of(first_id)
        rows = _filter_rows(db)
        if self.seal(db, open_run, rows):
            rows = _filter_rows(db)
        # every run below open_run is in a filter now
        found = {m for (m,) in self._in_filters(db, msg_ids, rows, open_run)}  # type: ignore[misc]
        if count and run_of(first_id + count - 1) != open_run:
            found |= {m for (m,) in _present(db, msg_ids, [open_run])}  # type: ignore[misc]
        return found

    def _in_filters(self, db: sqlite3.Connection, msg_ids: Sequence[str],
                    rows: list[tuple[int, int]], below: int,
                    columns: str = "msg_id") -> list[tuple[object, ...]]:
        """Rows of the ``msg_ids`` some filter may hold, probed in its runs (< ``below``)."""
        if not rows or not msg_ids:
            return []
        keys = [key(m) for m in msg_ids]
        found: list[tuple[object, ...]] = []
        bits = self.filters.current(db, rows)
        for (grp, upto), hits in zip(rows, dedup.maybe_each(bits, keys, MASK), strict=True):
            if hits:
                runs = range(grp * GROUP_RUNS, min(upto, below))
                found += _present(db, [msg_ids[i] for i in hits], runs, columns)
        return found

    def seal(self, db: sqlite3.Connection, open_run: int,
             rows: list[tuple[int, int]] | None = None) -> int:
        """Add every run below ``open_run`` no filter holds yet to its filter (in the
        caller's write transaction); how many runs were added. Rows deleted from the top
        (by hand) take their ids again: filters past ``open_run`` are dropped, and the
        last one is sealed again from ``open_run``, so none says a run is complete that
        can still take rows."""
        rows = _filter_rows(db) if rows is None else rows
        if rows and rows[-1][1] > open_run:
            grp = open_run // GROUP_RUNS
            db.execute("DELETE FROM msg_id_filters WHERE grp > ?", (grp,))
            db.execute("UPDATE msg_id_filters SET upto_run = ? WHERE grp = ? AND upto_run > ?",
                       (open_run, grp, open_run))
            rows = _filter_rows(db)
        start = dedup.first_unsealed(rows, lambda: _low_run(db))
        if start is None or start >= open_run:
            return 0
        sealed = 0
        grp, bits = None, None
        for one in _runs_with_rows(db, start, open_run - 1):  # a run at a time: bounded memory
            if one // GROUP_RUNS != grp:
                self._save(db, grp, bits, open_run)
                grp = one // GROUP_RUNS
                row = db.execute("SELECT bits FROM msg_id_filters WHERE grp = ?",
                                 (grp,)).fetchone()
                bits = dedup.new_bits(row[0] if row else None, FILTER_BITS // 8)
            dedup.set_bits(bits, [key(m) for (m,) in db.execute(
                f"SELECT msg_id FROM messages WHERE {RUN_EXPR} = ?", (one,))], MASK)  # noqa: S608
            sealed += 1
        self._save(db, grp, bits, open_run)
        return sealed

    @staticmethod
    def _save(db: sqlite3.Connection, grp: int | None, bits: object, open_run: int) -> None:
        """Store group ``grp``'s filter as holding its runs below ``open_run``."""
        if grp is None:
            return
        upto = min(open_run, (grp + 1) * GROUP_RUNS)
        db.execute("INSERT INTO msg_id_filters (grp, upto_run, bits) VALUES (?, ?, ?)"
                   " ON CONFLICT (grp) DO UPDATE SET upto_run = excluded.upto_run,"
                   " bits = excluded.bits", (grp, upto, bytes(bits)))  # type: ignore[call-overload]

    def find(self, db: sqlite3.Connection, msg_id: str,
             columns: str) -> tuple[object, ...] | None:
        """The row (``columns``) of ``msg_id``, or None: the runs a filter may hold it
        in, and the runs no filter holds yet (a reader never seals)."""
        top = _top_run(db)
        if top is None:
            return None
        rows = _filter_rows(db)
        found = self._in_filters(db, [msg_id], rows, top + 1, columns)
        if not found:  # runs past the filters: those with rows
            sealed_to = max((upto for _, upto in rows), default=None)
            low = _low_run(db) if sealed_to is None else min(sealed_to, top)
            found = _present(db, [msg_id], _runs_with_rows(db, top if low is None else low, top),
                             columns)
        return found[0] if found else None


def _low_run(db: sqlite3.Connection) -> int | None:
    (low,) = db.execute("SELECT MIN(id) FROM messages").fetchone()
    return None if low is None else run_of(low)
