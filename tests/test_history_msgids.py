"""The SQLite history stores a msg_id once, exactly, with its unique index local to runs
of 4,096 ids and older runs behind Bloom filters (gateway/history/msgids.py).

A run is 4,096 messages, so these tests write a few runs' worth (~1 s each) to cross
run boundaries, seal runs, and meet the cases where the unique index alone would let a
repeat in: a repeat of a sealed run's message, a batch that spills into the next run,
filters that say "maybe" to everything, and rows deleted from the top (by hand) whose
ids are taken again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from gateway.history import migrate, msgids
from gateway.history import query as q
from gateway.history.records import Record, record_of
from gateway.history.store import SqliteHistory
from gateway.messages import TypeIndex
from tests import history_fixture as fx

INDEX = TypeIndex(())
RUN = 1 << msgids.RUN_BITS


def record(n: int) -> Record:
    return record_of(fx.envelope(n, n / 3600, "git.push", [f"u{n % 7}"], [f"p{n % 5}"],
                                 {"note": f"message {n}"}), INDEX)


def write(store: SqliteHistory, numbers: list[int]) -> int:
    """One batch, as the recorder writes it (staged, flushed in one transaction)."""
    db = store.writer()
    db.execute("BEGIN IMMEDIATE")
    for n in numbers:
        store.stage(db, record(n))
    added = store.flush(db)
    db.execute("COMMIT")
    store.committed()
    return added


def fill(store: SqliteHistory, first: int, last: int, batch: int = 1000) -> None:
    for start in range(first, last + 1, batch):
        write(store, list(range(start, min(start + batch, last + 1))))


def stored(store: SqliteHistory) -> list[str]:
    return store.msg_ids()


def filters(path: Path) -> list[tuple[int, int, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT grp, upto_run, length(bits) FROM msg_id_filters").fetchall()


def test_a_repeat_of_any_run_is_refused_and_new_ones_stored(tmp_path):
    store = SqliteHistory(tmp_path / "h.sqlite")
    fill(store, 1, 3 * RUN)  # ids 1-12,288; the last batch (from 12,001, run 2) sealed 0-1
    assert filters(store.path) == [(0, 2, msgids.FILTER_BITS // 8)]
    # one of each sealed run, of the run this batch seals, of the open run, a repeat
    # within the batch, new ones
    again = [5, RUN + 5, 2 * RUN + 5, 3 * RUN - 1, 3 * RUN]
    assert write(store, [*again, 3 * RUN + 1, 3 * RUN + 1, 3 * RUN + 2, *again]) == 2
    ids = stored(store)
    assert len(ids) == len(set(ids)) == 3 * RUN + 2
    for n in (1, RUN, 2 * RUN + 7, 3 * RUN + 2):  # /id finds each, in or out of a filter
        found = store.get(fx.msg_id(n))
        assert found is not None and found.msg_id == fx.msg_id(n)
    assert store.get(fx.msg_id(10 * RUN)) is None
    store.close()


def test_a_batch_spilling_into_the_next_run_refuses_a_repeat_of_the_open_run(tmp_path):
    store = SqliteHistory(tmp_path / "h.sqlite")
    fill(store, 1, RUN - 100)
    # ids RUN-99 .. RUN+50 for the new ones: the repeat, last, would take id RUN+51, in
    # run 1, where the unique index does not see run 0's row
    assert write(store, [*range(RUN - 99, RUN + 51), 10]) == 150
    ids = stored(store)
    assert len(ids) == len(set(ids)) == RUN + 50
    store.close()


def test_filters_that_may_hold_everything_still_give_exact_answers(tmp_path):
    store = SqliteHistory(tmp_path / "h.sqlite")
    fill(store, 1, 2 * RUN + 10)
    with sqlite3.connect(store.path) as db:  # every bit set: every key is a "maybe"
        db.execute("UPDATE msg_id_filters SET bits = ?", (b"\xff" * (msgids.FILTER_BITS // 8),))
    store.dedup.filters.clear()
    assert write(store, [3, RUN + 3, 2 * RUN + 11, 2 * RUN + 12]) == 2
    assert store.get(fx.msg_id(RUN + 3)).msg_id == fx.msg_id(RUN + 3)
    assert store.get(fx.msg_id(9 * RUN)) is None
    store.close()


def test_rows_deleted_from_the_top_take_their_ids_again_and_stay_deduplicated(tmp_path):
    store = SqliteHistory(tmp_path / "h.sqlite")
    fill(store, 1, 2 * RUN + 500)  # run 0 sealed, the filter's upto_run 1
    with sqlite3.connect(store.path) as db:  # by hand: back into run 0
        db.execute("DELETE FROM message_names WHERE message_id > 4000")  # (the index file,
        # ahead of the history now, is filled again: test_history_indexfile.py)
        db.execute("DELETE FROM messages WHERE id > 4000")
    fill(store, 10_001, 10_000 + 2 * RUN)  # ids 4001 on: runs 0-2 again
    with sqlite3.connect(store.path) as db:
        (where,) = db.execute("SELECT id FROM messages WHERE msg_id = ?",
                              (fx.msg_id(10_050),)).fetchone()
    assert msgids.run_of(where) == 0  # in the run the filter had called complete
    assert write(store, [10_050, 10_000 + 2 * RUN + 1]) == 1
    ids = stored(store)
    assert len(ids) == len(set(ids)) == 4000 + 2 * RUN + 1
    assert store.get(fx.msg_id(10_050)) is not None
    assert store.get(fx.msg_id(3000 + RUN)) is None  # deleted
    store.close()


def test_a_single_add_is_deduplicated_across_runs(tmp_path):
    store = SqliteHistory(tmp_path / "h.sqlite")
    fill(store, 1, RUN + 10)
    with store.transaction() as db:
        assert store.add(db, record(1)) is False  # run 0, sealed
        assert store.add(db, record(RUN + 5)) is False  # run 1, open
        assert store.add(db, record(RUN + 11)) is True
    assert len(stored(store)) == RUN + 11
    store.close()


def test_an_existing_history_is_rebuilt_with_its_ids_and_deduplicates(tmp_path, monkeypatch,
                                                                     caplog):
    path = tmp_path / "h.sqlite"
    shipped = migrate.migrations("sqlite")
    with monkeypatch.context() as patch:  # a history written by a busgate before 006
        patch.setattr(migrate, "migrations", lambda backend: [m for m in shipped
                                                              if m.version < 6])
        SqliteHistory(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    for n in range(1, RUN + 101):
        fx.add_as_v1(db, record(n))
    db.execute("DELETE FROM messages WHERE id = 7")  # a gap the rebuild keeps
    db.execute("COMMIT")
    db.close()
    caplog.set_level(logging.INFO, logger="gateway.history.migrate")
    store = SqliteHistory(path)  # migrates: 006 rebuilds the table, and says so first
    assert f"history: applying 006_msg_id_runs.sql to {path}" in caplog.messages
    # the rebuilt table went through the write-ahead log: copied back, the log cut
    assert Path(f"{path}-wal").stat().st_size == 0
    with sqlite3.connect(path) as conn:
        indexes = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'")}
        assert "messages_msg_id" in indexes and not any("autoindex" in i for i in indexes)
        assert conn.execute("SELECT id FROM messages WHERE msg_id = ?",
                            (fx.msg_id(RUN + 100),)).fetchone() == (RUN + 100,)
        triggers = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'messages'")}
    assert triggers == {"messages_activity_add", "messages_activity_remove",
                        "stats_topic_days_insert", "stats_topic_days_delete",
                        "stats_topic_days_update"}
    assert store.get(fx.msg_id(3)) is not None  # no filter yet: every run probed
    assert write(store, [1, RUN + 1, RUN + 101, 7]) == 2  # 7 was deleted: new again
    assert filters(path) == [(0, 1, msgids.FILTER_BITS // 8)]
    assert sorted(stored(store)) == sorted(fx.msg_id(n) for n in range(1, RUN + 102))
    (found,) = store.search(q.parse([("contains", f"message {RUN + 50}")])).rows
    assert found.msg_id == fx.msg_id(RUN + 50)  # the text index still names the rows
    store.close()


def test_a_row_far_ahead_is_stepped_over_not_walked_run_by_run(tmp_path):
    store = SqliteHistory(tmp_path / "h.sqlite")
    fill(store, 1, RUN + 10)
    far = 1 << 40  # a row written by hand far ahead: 2**28 runs between
    with sqlite3.connect(store.path) as db:
        fx.add_as_v1(db, record(50_000))
        db.execute("UPDATE messages SET id = ? WHERE id = ?", (far, RUN + 11))
    started = time.monotonic()
    # 1 in sealed run 0, RUN + 5 in run 1 (sealed now), 50,000 in far's run, open
    assert write(store, [1, RUN + 5, 50_000, 50_001]) == 1
    assert store.get(fx.msg_id(50_000)) is not None and store.get(fx.msg_id(3)) is not None
    assert time.monotonic() - started < 5
    # group 0's filter holds all its runs: the empty ones can no longer take a row
    assert [(grp, upto) for grp, upto, _ in filters(store.path)] == [(0, msgids.GROUP_RUNS)]
    store.close()


def test_an_open_waits_for_another_process_migrating(tmp_path, monkeypatch):
    """A rebuild holds the write lock longer than a writer's usual wait (006: ~45 s a
    million messages): ``busgate web`` started beside the migrating recorder waits for
    it rather than fail with "database is locked" (exit 73, not restarted)."""
    from gateway.history import store as store_module

    path = tmp_path / "h.sqlite"
    SqliteHistory(path).close()
    with sqlite3.connect(path) as db:  # 005 to apply again (its one statement is a
        db.execute("DELETE FROM history_migrations WHERE version = 5")  # setting, of
        db.execute("CREATE VIRTUAL TABLE messages_text USING fts5 (body)")  # a table 008 drops)
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT", 0.2)  # a writer's usual wait, short
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's long migration
    releaser = threading.Timer(1.5, lambda: holder.execute("COMMIT"))
    releaser.start()
    started = time.monotonic()
    try:
        store = SqliteHistory(path)
    finally:
        releaser.join()
        holder.close()
    assert time.monotonic() - started >= 1.2
    assert migrate.missing_sqlite(store.writer()) == ([], [])
    assert store.writer().execute("PRAGMA busy_timeout").fetchone() == (200,)  # usual again
    store.close()
