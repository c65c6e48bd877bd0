"""Keys of pruned outbox rows, kept for dedup, laid out by run like the outbox's index.

Retention (gateway/retention.py) deletes published rows but must still refuse their
keys for ``dedup_days`` (at most ``dedup_max_keys``). Keyed by the random uid alone,
that table made every retention pass rewrite random pages, and the commit rate fell by
half once pruning started. Here a key is stored under its row's run (``seq_id >> 16``,
gateway/dedup.py): a pass moves rows in seq_id order, so it writes the pages of one or
two runs, and expiry drops whole runs (``pruned_runs`` holds each run's count and
newest time), so it frees contiguous pages. The runs' dedup filters outlive their rows
(gateway/dedup.py), so a key is looked up here only when a filter may hold it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from gateway import dedup

SCHEMA = """
-- v4: the keys of pruned rows by run (see gateway/pruned_keys.py)
CREATE TABLE IF NOT EXISTS pruned_uids (
    run INTEGER NOT NULL,  -- the pruned row's seq_id >> 16
    uid BLOB NOT NULL,     -- its uid: the key may not be stored again
    PRIMARY KEY (run, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pruned_runs (
    run    INTEGER PRIMARY KEY,
    keys   INTEGER NOT NULL,  -- how many of its keys pruned_uids holds
    newest INTEGER NOT NULL   -- the newest one's timestamp: forgotten dedup_days after
);
"""


def move(conn: sqlite3.Connection, after: int, upto: int) -> None:
    """Keep the keys of the outbox rows ``after < seq_id <= upto`` (about to be deleted),
    in (run, uid) order: the B-tree is written where those runs' keys are, nowhere else."""
    span = (after, upto)
    conn.execute(
        f"INSERT OR IGNORE INTO pruned_uids (run, uid) SELECT {dedup.RUN_EXPR}, uid"  # noqa: S608
        " FROM outbox WHERE seq_id > ? AND seq_id <= ? ORDER BY 1, 2", span)
    conn.execute(
        f"INSERT INTO pruned_runs (run, keys, newest) SELECT {dedup.RUN_EXPR},"  # noqa: S608
        " COUNT(*), MAX(timestamp) FROM outbox WHERE seq_id > ? AND seq_id <= ? GROUP BY 1"
        " ON CONFLICT (run) DO UPDATE SET keys = keys + excluded.keys,"
        " newest = MAX(newest, excluded.newest)", span)


@contextmanager
def fast_delete(conn: sqlite3.Connection) -> Iterator[None]:
    """Deletes that do not zero the pages they free (``secure_delete=FAST``; Debian's
    SQLite zeroes them by default): retention frees about a page per five rows, and
    zeroing wrote each again, 35% of a pass's WAL. What is pruned was published, and
    new rows soon reuse the pages."""
    before = conn.execute("PRAGMA secure_delete").fetchone()[0]
    conn.execute("PRAGMA secure_delete=FAST")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA secure_delete={int(before)}")


def forget(conn: sqlite3.Connection, before: int, keep: int) -> int:
    """Forget whole runs, oldest first: those whose keys are all older than ``before``
    (epoch seconds), and those beyond the newest ``keep`` keys (a run goes only when
    the newer runs hold ``keep`` without it, so up to a run more are kept). Drops the
    filters left with no run. Returns how many keys were forgotten."""
    runs = conn.execute("SELECT run, keys, newest FROM pruned_runs ORDER BY run").fetchall()
    total = sum(keys for _, keys, _ in runs)
    below, gone = None, 0
    for run, keys, newest in runs:
        if newest >= before and total - keys < keep:
            break
        below, total, gone = run + 1, total - keys, gone + keys
    if below is None:
        return 0
    with fast_delete(conn):
        conn.execute("DELETE FROM pruned_uids WHERE run < ?", (below,))
        conn.execute("DELETE FROM pruned_runs WHERE run < ?", (below,))
    dedup.drop_forgotten(conn)
    return gone


def detach_v3(conn: sqlite3.Connection) -> bool:
    """Rename a v2/v3 ``pruned_uids`` (keyed by uid alone) out of the way of the v4
    one (migration). Returns whether there was one."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(pruned_uids)")]
    if "timestamp" not in columns:
        return False
    conn.execute("DROP INDEX IF EXISTS pruned_uids_age")
    conn.execute("ALTER TABLE pruned_uids RENAME TO pruned_uids_v3")
    return True


def copy_v3(conn: sqlite3.Connection) -> None:
    """Fill the v4 tables from the table :func:`detach_v3` kept, then drop it."""
    run = f"seq_id >> {dedup.RUN_BITS}"
    conn.execute(f"INSERT OR IGNORE INTO pruned_uids (run, uid) SELECT {run}, uid"  # noqa: S608
                 " FROM pruned_uids_v3 ORDER BY 1, 2")
    conn.execute(f"INSERT INTO pruned_runs (run, keys, newest) SELECT {run}, COUNT(*),"  # noqa: S608
                 " MAX(timestamp) FROM pruned_uids_v3 GROUP BY 1")
    conn.execute("DROP TABLE pruned_uids_v3")
