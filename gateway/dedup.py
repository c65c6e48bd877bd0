"""Exact outbox dedup whose writes stay local however big the outbox grows.

A unique index on the random uid alone made every commit dirty about one random index
page per event once the index outgrew a batch, and the WAL wrote each of them: the
commit rate fell by half on the way to 3M rows. So the outbox's uid index is keyed
``(seq_id >> RUN_BITS, uid)`` instead: the rows of one *run* of 65,536 consecutive
seq_ids sit together, and a commit only dirties pages of the newest run.

The index is unique within a run, so a repeated key in the newest run is refused by
SQLite as before. Runs below the newest one are complete (seq_ids only grow) and are
summarised by Bloom filters (table ``dedup_filters``, one per :data:`GROUP_RUNS` runs);
only a key a filter may hold is looked up in those runs, through the index, so dedup
stays exact. A run joins its filter once, by the first commit past its end (sealing:
one sequential read of the run, one write of the filter).

The filters outlive the rows: retention keeps a pruned row's key in ``pruned_uids``
under its run (gateway/pruned_keys.py), and a filter goes only when all its runs are
gone from both tables. So a pruned key is looked up, like a kept one, only when a
filter may hold it; pruned keys of a run no filter holds yet (retention reached the
newest run) are looked up directly.

numpy is imported only when a filter is used (the MTA pipe path never is); without it
the same bits are set and checked in plain Python, slower (a run's seal ~3 µs a key).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

RUN_BITS = 16
#: The indexed expression; queries must spell it exactly so for SQLite to use the index.
RUN_EXPR = "seq_id >> 16"
#: Runs per filter: 4,194,304 rows.
GROUP_RUNS = 64
#: Bits per filter (8 MiB): 4 hashes over 4M keys give ~0.2% false positives.
FILTER_BITS = 1 << 26
HASHES = 4  # unrolled in _maybe_python
#: Below this many keys a filter is checked in plain Python (numpy's per-call cost).
SMALL = 64

SCHEMA = f"""
CREATE UNIQUE INDEX IF NOT EXISTS outbox_uid ON outbox ({RUN_EXPR}, uid);
-- v3: Bloom filters of the complete runs' uids (see gateway/dedup.py)
CREATE TABLE IF NOT EXISTS dedup_filters (
    grp      INTEGER PRIMARY KEY,  -- runs grp * {GROUP_RUNS} ...
    upto_run INTEGER NOT NULL,     -- ... below upto_run are in bits
    bits     BLOB NOT NULL
);
"""
#: Every run that may hold rows: an exact lookup by uid through the index (a bare
#: ``uid = ?`` would scan the whole outbox).
ALL_RUNS = ("(WITH RECURSIVE run(n) AS (SELECT MIN(seq_id) >> 16 FROM outbox"
            " UNION ALL SELECT n + 1 FROM run"
            " WHERE n < (SELECT MAX(seq_id) >> 16 FROM outbox)) SELECT n FROM run)")
#: An SQL condition on ``outbox`` matching the row with uid ``?``.
UID_MATCH = f"({RUN_EXPR} IN {ALL_RUNS} AND uid = ?)"

_MASK = FILTER_BITS - 1


def run_of(seq_id: int) -> int:
    return seq_id >> RUN_BITS


#: Where each table keeps a key's run (both are indexed on (run, uid)).
_RUN_OF = {"outbox": RUN_EXPR, "pruned_uids": "run"}


def present(conn: sqlite3.Connection, uids: Sequence[bytes], runs: Sequence[int],
            chunk: int = 500, table: str = "outbox") -> set[bytes]:
    """Which of ``uids`` ``table`` (the outbox, or the pruned keys) holds in ``runs``
    (exact, one index probe per pair)."""
    found: set[bytes] = set()
    if not uids or not runs:
        return found
    listed = ",".join(str(int(r)) for r in runs)
    for start in range(0, len(uids), chunk):
        part = list(uids[start:start + chunk])
        marks = ",".join("?" * len(part))
        found.update(r[0] for r in conn.execute(
            f"SELECT uid FROM {table} WHERE {_RUN_OF[table]} IN ({listed})"  # noqa: S608
            f" AND uid IN ({marks})", part))
    return found


def pruned_runs(conn: sqlite3.Connection) -> list[int]:
    """The runs with pruned keys remembered (a few dozen at most: 65,536 keys each)."""
    return [r[0] for r in conn.execute("SELECT run FROM pruned_runs ORDER BY run")]


def lowest_run(conn: sqlite3.Connection) -> int | None:
    """The oldest run with a key anywhere (outbox or pruned), None: no key at all."""
    low = conn.execute("SELECT (SELECT MIN(seq_id) FROM outbox),"
                       " (SELECT MIN(run) FROM pruned_runs)").fetchone()
    runs = [run for run in (None if low[0] is None else run_of(low[0]), low[1])
            if run is not None]
    return min(runs, default=None)


def all_runs(conn: sqlite3.Connection) -> range:
    """The runs holding rows now (empty outbox: none)."""
    # two subqueries: SQLite reads one end of the primary key for each, where a single
    # "SELECT MIN(seq_id), MAX(seq_id)" scans the whole table
    low, high = conn.execute("SELECT (SELECT MIN(seq_id) FROM outbox),"
                             " (SELECT MAX(seq_id) FROM outbox)").fetchone()
    return range(0) if low is None else range(run_of(low), run_of(high) + 1)


def _numpy() -> Any:
    """numpy, or None where it is not installed."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def _add_python(bits: bytearray, uid: bytes, mask: int = _MASK) -> None:
    a = int.from_bytes(uid[:6], "little")
    b = int.from_bytes(uid[9:], "little") | 1
    for i in range(HASHES):
        p = (a + i * b) & mask
        bits[p >> 3] |= 1 << (p & 7)


def _positions(uids: Sequence[bytes], mask: int = _MASK) -> np.ndarray:
    """The :data:`HASHES` bit positions of each uid, shape ``(HASHES, len(uids))``, in a
    filter of ``mask + 1`` bits (a power of two).

    A uid is already a hash (uuid5), so its bytes are used directly (double hashing),
    leaving out byte 6 and 8, which hold the uuid's fixed version and variant bits."""
    import numpy as np

    raw = np.frombuffer(b"".join(uids), dtype="<u8").reshape(-1, 2)
    a = raw[:, 0] & np.uint64((1 << 48) - 1)  # bytes 0-5
    b = (raw[:, 1] >> np.uint64(8)) | np.uint64(1)  # bytes 9-15
    i = np.arange(HASHES, dtype=np.uint64)[:, None]
    return (a + i * b) & np.uint64(mask)


def _maybe_python(views: list[memoryview], uid: bytes, mask: int = _MASK) -> bool:
    """:func:`_positions` for one uid, unrolled (:data:`HASHES` is 4): the group commit
    checks one key per call."""
    a = int.from_bytes(uid[:6], "little")
    b = int.from_bytes(uid[9:], "little") | 1
    p0, p1, p2, p3 = a & mask, (a + b) & mask, (a + 2 * b) & mask, (a + 3 * b) & mask
    return any(bits[p0 >> 3] >> (p0 & 7) & bits[p1 >> 3] >> (p1 & 7)
               & bits[p2 >> 3] >> (p2 & 7) & bits[p3 >> 3] >> (p3 & 7) & 1 for bits in views)


class Filters:
    """This process's copy of the filters, checked against the database each time it
    is used (another writer may have sealed a run since) and reloaded if it changed.
    ``table``: where they are kept (``grp``, ``upto_run``, ``bits``)."""

    def __init__(self, table: str = "dedup_filters") -> None:
        self._table = table
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[int, memoryview, np.ndarray | None]] = {}

    def clear(self) -> None:
        with self._lock:
            self._cache = {}

    def current(self, conn: sqlite3.Connection,
                rows: list[tuple[int, int]]) -> list[tuple[memoryview, np.ndarray | None]]:
        """The filters of ``rows`` (``(grp, upto_run)`` as in the database now)."""
        if not rows:
            return []
        np = _numpy()
        with self._lock:
            fresh = {}
            for grp, upto in rows:
                have = self._cache.get(grp)
                if have is None or have[0] != upto:
                    blob = conn.execute(f"SELECT bits FROM {self._table} WHERE grp = ?",  # noqa: S608
                                        (grp,)).fetchone()[0]
                    array = None if np is None else np.frombuffer(blob, dtype=np.uint8)
                    have = (upto, memoryview(blob), array)
                fresh[grp] = have
            self._cache = fresh
            return [(view, array) for _, view, array in fresh.values()]


def maybe(filters: list[tuple[memoryview, np.ndarray | None]],
          uids: Sequence[bytes], mask: int = _MASK) -> list[bytes]:
    """The uids some of ``filters`` (of ``mask + 1`` bits) may hold (the others are in
    no complete run)."""
    hits = sorted({i for each in maybe_each(filters, uids, mask) for i in each})
    return [uids[i] for i in hits]


def maybe_each(filters: list[tuple[memoryview, np.ndarray | None]],
               uids: Sequence[bytes], mask: int = _MASK) -> list[list[int]]:
    """Per filter, the indexes of the ``uids`` it may hold: a caller that knows which
    runs each filter covers looks a key up in those runs alone."""
    if not filters or not uids:
        return [[] for _ in filters]
    np = _numpy()
    if len(uids) < SMALL or np is None or any(array is None for _, array in filters):
        return [[i for i, u in enumerate(uids) if _maybe_python([view], u, mask)]
                for view, _ in filters]
    pos = _positions(uids, mask)
    byte, shift = pos >> np.uint64(3), (pos & np.uint64(7)).astype(np.uint8)
    return [np.flatnonzero(((array[byte] >> shift) & 1).all(axis=0)).tolist()
            for _, array in filters]


def new_bits(blob: bytes | None, size: int = FILTER_BITS // 8) -> Any:
    """A writable filter of ``size`` bytes (``blob``'s bits, or none set): a numpy
    array where numpy is installed, else a bytearray; :func:`set_bits` takes either."""
    bits = bytearray(blob if blob is not None else size)
    np = _numpy()
    return bits if np is None else np.frombuffer(bits, dtype=np.uint8)


def set_bits(bits: Any, uids: Sequence[bytes], mask: int = _MASK) -> None:
    """Add ``uids`` to the filter ``bits`` (from :func:`new_bits`, ``mask + 1`` bits)."""
    if not uids:
        return
    if isinstance(bits, bytearray):
        for uid in uids:
            _add_python(bits, uid, mask)
        return
    import numpy as np

    pos = _positions(uids, mask).ravel()
    np.bitwise_or.at(bits, pos >> np.uint64(3),
                     (np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8)))


def _rows(conn: sqlite3.Connection) -> list[tuple[int, int]]:
    return conn.execute("SELECT grp, upto_run FROM dedup_filters").fetchall()


def first_unsealed(rows: Sequence[tuple[int, int]],
                   lowest: Callable[[], int | None]) -> int | None:
    """Where sealing resumes: past the newest filter's runs (``rows``: ``(grp,
    upto_run)``), or, with no filter yet, at ``lowest()``, the lowest run holding keys."""
    start = max((upto for _, upto in rows), default=None)
    return lowest() if start is None else start


def seal(conn: sqlite3.Connection, open_run: int,
         rows: list[tuple[int, int]] | None = None) -> int:
    """Add every run below ``open_run`` not in a filter yet to its filter (inside the
    caller's write transaction). Returns how many runs were added."""
    start = first_unsealed(_rows(conn) if rows is None else rows, lambda: lowest_run(conn))
    if start is None or start >= open_run:
        return 0
    run = start
    while run < open_run:
        grp = run // GROUP_RUNS
        end = min(open_run, (grp + 1) * GROUP_RUNS)
        row = conn.execute("SELECT bits FROM dedup_filters WHERE grp = ?", (grp,)).fetchone()
        bits = new_bits(row[0] if row else None)
        for one in range(run, end):  # a run at a time: bounded memory
            set_bits(bits, [r[0] for r in conn.execute(
                f"SELECT uid FROM outbox WHERE {RUN_EXPR} = ?"  # noqa: S608
                " UNION ALL SELECT uid FROM pruned_uids WHERE run = ?", (one, one))])
        conn.execute(
            "INSERT INTO dedup_filters (grp, upto_run, bits) VALUES (?, ?, ?)"
            " ON CONFLICT (grp) DO UPDATE SET upto_run = excluded.upto_run,"
            " bits = excluded.bits", (grp, end, bytes(bits)))
        run = end
    return open_run - start


class Pass:
    """Dedup inside one write transaction. It holds the write lock, so no one else can
    seal a run meanwhile: the filters are read once per transaction, not per call (the
    group commit calls once per spool item)."""

    def __init__(self, conn: sqlite3.Connection, filters: Filters):
        self._conn = conn
        self._filters = filters
        self._sealed_below = -1  # runs below this are in self._bits
        self._bits: list[tuple[memoryview, np.ndarray | None]] = []
        self._pruned: tuple[list[int], list[int]] = ([], [])  # (in a filter, not yet)

    def stale(self) -> None:
        """Read the filters and pruned runs again at the next call (retention moved
        keys inside this transaction)."""
        self._sealed_below = -1

    def known(self, uids: Sequence[bytes], first_seq: int, count: int) -> set[bytes]:
        """Which of ``uids`` the outbox holds (or held: pruned keys) where the unique
        index will not see them when rows from ``first_seq`` on (``count`` at most) are
        inserted: in complete runs, pruned, and, if those rows spill into a new run, in
        ``first_seq``'s run too."""
        conn, open_run = self._conn, run_of(first_seq)
        if open_run > self._sealed_below:
            rows = _rows(conn)
            if seal(conn, open_run, rows):
                rows = _rows(conn)
            self._bits = self._filters.current(conn, rows)
            self._sealed_below = open_run
            runs = pruned_runs(conn)
            self._pruned = ([r for r in runs if r < open_run], [r for r in runs if r >= open_run])
        found: set[bytes] = set()
        candidates = maybe(self._bits, uids)
        sealed, unsealed = self._pruned
        if candidates:
            runs = all_runs(conn)
            found |= present(conn, candidates, range(runs.start, min(runs.stop, open_run)))
            found |= present(conn, candidates, sealed, table="pruned_uids")
        if unsealed:  # retention reached runs no filter holds yet: rare, and small
            found |= present(conn, uids, unsealed, table="pruned_uids")
        if count and run_of(first_seq + count - 1) != open_run:
            found |= present(conn, uids, range(open_run, open_run + 1))
        return found


def drop_forgotten(conn: sqlite3.Connection) -> int:
    """Forget the filters none of whose runs has a key left, in the outbox or pruned
    (never the newest filter, which says where sealing resumes). Returns how many went."""
    low = lowest_run(conn)
    if low is None:
        return 0
    return conn.execute(
        "DELETE FROM dedup_filters WHERE grp < ?"
        " AND grp < (SELECT MAX(grp) FROM dedup_filters)", (low // GROUP_RUNS,)).rowcount
