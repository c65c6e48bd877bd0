"""Outbox dedup through the per-run uid index and the filters of complete runs
(gateway/dedup.py): exact across runs, across processes' caches, through the v2 -> v3
migration, and every lookup by uid goes through the index."""

import shutil
import sqlite3
from pathlib import Path

from gateway import dedup, replay
from gateway.envelope import event_uid
from gateway.event import Event
from gateway.store import SCHEMA_VERSION, EnvelopeFactory, Store

V2 = Path(__file__).resolve().parent.parent / "fixtures" / "state" / "v2.sqlite"
RUN = 1 << dedup.RUN_BITS


def make_store(path: Path) -> Store:
    return Store(path, EnvelopeFactory("org.test.dev", "test", "tester"))


def add(store: Store, *names: str) -> list[int]:
    with store.transaction() as tx:
        return tx.add_events([Event("src", "thing", "changed", key=f"src:{n}", body={})
                              for n in names])


def jump(store: Store, seq_id: int) -> None:
    """A row at ``seq_id`` (the next ones follow it): runs without 65,536 events."""
    with store.transaction() as tx:
        tx._conn.execute(
            "INSERT INTO outbox (seq_id, uid, key, msg_id, topic, timestamp, envelope)"
            " VALUES (?, ?, ?, '', 't', 0, '{}')", (seq_id, event_uid(f"pad{seq_id}"),
                                                    f"pad{seq_id}"))


def filters(store: Store) -> list[tuple[int, int]]:
    return store.connect().execute("SELECT grp, upto_run FROM dedup_filters").fetchall()


def test_the_index_expression_is_the_run(tmp_path):
    assert f"seq_id >> {dedup.RUN_BITS}" == dedup.RUN_EXPR
    assert f">> {dedup.RUN_BITS} " in dedup.ALL_RUNS
    store = make_store(tmp_path / "s.sqlite")
    sql = store.connect().execute(
        "SELECT sql FROM sqlite_master WHERE name = 'outbox_uid'").fetchone()[0]
    assert f"({dedup.RUN_EXPR}, uid)" in sql and "UNIQUE" in sql


def test_a_key_in_a_complete_run_is_not_stored_again(tmp_path):
    store = make_store(tmp_path / "s.sqlite")
    jump(store, RUN - 10)
    first = add(store, *range(20))  # run 0's last 9 seq_ids, then run 1
    assert first == list(range(RUN - 9, RUN + 11))
    assert filters(store) == []  # run 0 is complete, but sealed by the next commit
    assert add(store, *range(20)) == []  # run 0 from its filter, run 1 from the index
    assert filters(store) == [(0, 1)]
    assert add(store, 5, 500, 15, 501) == [RUN + 11, RUN + 12]
    assert store.has_key("src:0") and store.has_key("src:19") and not store.has_key("src:9x")
    with store.transaction() as tx:
        assert tx.has_key("src:1") and not tx.has_key("src:502")


def test_a_batch_spilling_into_a_new_run_refuses_a_key_of_the_old_one(tmp_path):
    """The unique index is per run: a repeat landing in the next run is caught by a
    lookup in the run the batch started in."""
    store = make_store(tmp_path / "s.sqlite")
    jump(store, RUN - 6)
    assert add(store, "a", "b", "c") == [RUN - 5, RUN - 4, RUN - 3]
    # seq_ids RUN-2 .. RUN+1: "c" would land in run 1, "a" too
    assert add(store, "d", "e", "f", "c", "g", "a", "h") == list(range(RUN - 2, RUN + 3))
    keys = [r[0] for r in store.connect().execute("SELECT key FROM outbox ORDER BY seq_id")]
    assert keys == [f"pad{RUN - 6}", *(f"src:{k}" for k in "abcdefgh")]


def test_another_writers_sealed_run_is_seen(tmp_path):
    """Each Store caches the filters; another writer's seal must reach it (a stale
    cache would let a repeated key through)."""
    path = tmp_path / "s.sqlite"
    one, two = make_store(path), make_store(path)
    jump(one, RUN - 2)
    add(one, "x0", "x1", "x2")
    add(one, "y")  # seals run 0; one's cache now holds the filter up to run 1
    assert add(one, "x0") == [] and filters(one) == [(0, 1)]
    jump(two, 2 * RUN - 3)
    assert add(two, "z0", "z1", "z2", "z3") == list(range(2 * RUN - 2, 2 * RUN + 2))
    add(two, "w")  # two seals run 1 (x2 .. z1)
    assert filters(two) == [(0, 2)]
    assert add(one, "x2", "z0", "y", "fresh") == [2 * RUN + 3]


def test_python_and_numpy_filter_checks_agree():
    import numpy as np

    uids = [event_uid(f"k{n}") for n in range(3000)]
    bits = np.zeros(dedup.FILTER_BITS // 8, dtype=np.uint8)
    pos = dedup._positions(uids[:1000]).ravel()
    np.bitwise_or.at(bits, pos >> np.uint64(3),
                     np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8))
    blob = bits.tobytes()
    view = memoryview(blob)
    python = [u for u in uids if dedup._maybe_python([view], u)]
    assert dedup.maybe([(view, bits)], uids) == python  # the numpy path
    assert dedup.maybe([(view, bits)], uids[:50]) == python[:50]  # the plain one
    hits = np.ones(len(uids), dtype=bool)
    allpos = dedup._positions(uids)
    hits &= ((bits[allpos >> np.uint64(3)] >> (allpos & np.uint64(7)).astype(np.uint8))
             & 1).all(axis=0)
    assert python == [uids[i] for i in np.flatnonzero(hits)]
    assert python[:1000] == uids[:1000]  # no false negative
    assert len(python) - 1000 <= 5  # few false positives among 2000 others


def test_v2_database_migrates_with_its_pruned_keys(tmp_path):
    path = tmp_path / "busgate.sqlite"
    shutil.copy(V2, path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (2,)
        old = {t: raw.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
               for t in ("outbox", "cursors", "snapshots", "counters", "source_facts")}
        keys = sorted(raw.execute("SELECT seq_id >> 16, uid FROM pruned_uids"))
    raw.close()
    store = make_store(path)
    conn = store.connect()
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (4,)
    for table, rows in old.items():
        assert conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() == rows, table
    assert conn.execute("SELECT run, uid FROM pruned_uids").fetchall() == keys
    assert len(keys) == 30
    assert conn.execute("SELECT * FROM pruned_runs").fetchall() == [(0, 30, 1_700_000_000)]
    assert [r for r in conn.execute("PRAGMA index_list(outbox)") if r[3] == "u"] == []
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert store.pruned_seq_id() == 30 and store.last_seq_id() == 40
    # pruned (1-30) and kept (31-40) keys are known; new ones follow seq_id 40
    assert add(store, 0, 29, 30, 39, 40, 41) == [41, 42]
    store.close()
    again = make_store(path)  # opening a v4 file writes nothing
    assert again.connect().execute("PRAGMA user_version").fetchone() == (4,)


def test_migration_puts_complete_runs_in_a_filter(tmp_path):
    """A v2 outbox spanning runs: its complete runs are sealed by the migration, so
    the first commit afterwards does not read them."""
    path = tmp_path / "busgate.sqlite"
    shutil.copy(V2, path)
    with sqlite3.connect(path) as raw:  # still v2: rows 31-40 now straddle runs 0 and 1
        raw.execute("UPDATE outbox SET seq_id = seq_id + ?", (RUN - 36,))
    raw.close()
    store = make_store(path)
    assert filters(store) == [(0, 1)]
    assert add(store, 30, 34, 39, 77) == [RUN + 5]  # src:30, src:34 in run 0, src:39 in 1


def test_lookups_by_uid_use_the_index(tmp_path):
    """No full scan of the outbox for a uid: has_key, replay by msg_id(s)."""
    store = make_store(tmp_path / "s.sqlite")
    conn = store.connect()

    def plan(where: str, params: list) -> str:
        rows = conn.execute(f"EXPLAIN QUERY PLAN SELECT seq_id FROM outbox WHERE {where}",
                            params).fetchall()
        return " | ".join(r[3] for r in rows)

    msg_id = "2024-" + "1" * 8 + "-1111-5111-9111-" + "1" * 12
    for query in ({"msg_id": msg_id}, {"msg_ids": [msg_id, msg_id]}):
        where, params = replay.plan(query)
        assert "USING COVERING INDEX outbox_uid" in plan(where, params)
        assert "SCAN outbox" not in plan(where, params)
    assert "SCAN outbox" not in plan(dedup.UID_MATCH, [b"x" * 16])


def test_several_complete_runs_are_sealed_by_one_commit(tmp_path):
    """A commit past several runs (rows that came in one big batch) seals them all, in
    the filter of their group."""
    store = make_store(tmp_path / "s.sqlite")
    for run in range(1, 4):
        jump(store, run * RUN)
    add(store, "a")
    assert filters(store) == [(0, 3)]
    assert store.connect().execute("SELECT length(bits) FROM dedup_filters").fetchone() \
        == (dedup.FILTER_BITS // 8,)


def test_filters_outlive_pruned_runs_and_go_with_forgotten_ones(tmp_path):
    """A pruned key is found through its run's filter, so the filter stays while its
    runs' keys are remembered; it goes once they are all forgotten."""
    store = make_store(tmp_path / "s.sqlite")
    group = dedup.GROUP_RUNS * RUN  # rows per filter
    add(store, "a")
    jump(store, group + 1)
    add(store, "b")  # seals group 0
    jump(store, group + RUN + 1)
    add(store, "c")  # seals run 64, the first of group 1
    both = [(0, dedup.GROUP_RUNS), (1, dedup.GROUP_RUNS + 1)]
    assert filters(store) == both
    with store.transaction() as tx:
        assert tx.prune_outbox(group + 1, 10**9) == 2  # "a" and the row after group 0
    assert filters(store) == both
    # "a" is remembered as pruned (through group 0's filter), "b" through group 1's
    assert add(store, "a", "b", "c", "d") == [group + RUN + 3]
    with store.transaction() as tx:  # run 0 ("a") forgotten: group 0 has no key left
        assert tx.forget_pruned(before=0, keep=1) == 1
    assert filters(store) == [(1, dedup.GROUP_RUNS + 1)]
    assert add(store, "a", "b") == [group + RUN + 4]


def test_a_pruned_key_is_found_through_the_filter_alone(tmp_path):
    """Many runs of pruned keys: a repeat is looked up only in the runs pruned_uids
    holds, and only for keys a filter may hold (no probe per key, no scan)."""
    store = make_store(tmp_path / "s.sqlite")
    for run in range(6):
        jump(store, run * RUN + 1)
        add(store, f"r{run}")
    with store.transaction() as tx:
        assert tx.prune_outbox(5 * RUN, 10**9) == 10  # runs 0-4, the pad rows too
    assert [r[0] for r in store.connect().execute("SELECT run FROM pruned_runs")] \
        == [0, 1, 2, 3, 4]
    statements: list[str] = []
    conn = store.connect()
    conn.set_trace_callback(statements.append)
    try:
        assert add(store, "r0", "r3", "r5", *(f"new{n}" for n in range(100))) \
            == list(range(5 * RUN + 3, 5 * RUN + 103))
    finally:
        conn.set_trace_callback(None)
    probes = [s for s in statements if "FROM pruned_uids WHERE run IN" in s]
    assert len(probes) == 1 and "run IN (0,1,2,3,4)" in probes[0]
    assert probes[0].count("X'") <= 4  # r0, r3 and at most a false positive or two
    plan = " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {probes[0]}"))
    assert "SEARCH pruned_uids USING PRIMARY KEY (run=? AND uid=?)" in plan, plan
    assert store.pruned_uids([event_uid("src:r0"), event_uid("src:r5")]) \
        == {event_uid("src:r0")}


def test_keys_pruned_from_a_run_no_filter_holds_yet(tmp_path):
    """Retention may reach the newest run (outbox_max_rows = 1): its pruned keys are in
    no filter, so they are looked up directly, and sealing the run puts them in one."""
    store = make_store(tmp_path / "s.sqlite")
    jump(store, RUN - 20)
    add(store, *range(10))  # run 0
    with store.transaction() as tx:
        assert tx.prune_outbox(RUN - 12, 10**9) == 9  # pad, 0-7: run 0 is not sealed
    assert filters(store) == []
    assert add(store, 3, 9, 10) == [RUN - 9]
    assert add(store, *range(20, 40)) == list(range(RUN - 8, RUN + 12))  # into run 1
    assert filters(store) == []
    assert add(store, 0, 7, 9, 10, 41) == [RUN + 12]  # seals run 0, its pruned keys too
    assert filters(store) == [(0, 1)]
    assert add(store, 1, 6, 20) == []  # pruned 1, 6 through the filter now


def test_no_statement_of_add_events_scans_the_outbox(tmp_path):
    """Every query add_events makes (sealing, filter hits, a batch spilling into a new
    run) reads the outbox through an index: its cost must not grow with the outbox."""
    store = make_store(tmp_path / "s.sqlite")
    jump(store, RUN - 3)
    add(store, "a", "b")
    add(store, *range(10))  # spills into run 1; seals run 0 on the way
    statements: list[str] = []
    conn = store.connect()
    conn.set_trace_callback(statements.append)
    try:
        assert add(store, "a", "b", 3, "new") == [RUN + 10]  # "a", "b": filter hits
    finally:
        conn.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert any("IN (0)" in s and "uid IN" in s for s in selects)  # a filter hit looked up
    for sql in selects:
        if "ORDER BY seq_id DESC LIMIT 1" in sql:
            continue  # the newest row: one step from the primary key's end
        plan = " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "SCAN outbox" not in plan, (sql, plan)


def test_without_numpy_the_same_filter_in_plain_python(tmp_path, monkeypatch):
    """numpy is optional: without it sealing and checking give the same bits."""
    def fill(store: Store) -> bytes:
        jump(store, RUN - 200)
        add(store, *range(300))  # 199 in run 0
        assert add(store, *range(0, 400, 2)) == list(range(RUN + 101, RUN + 151))
        return store.connect().execute("SELECT bits FROM dedup_filters").fetchone()[0]

    with_numpy = fill(make_store(tmp_path / "a.sqlite"))
    monkeypatch.setattr(dedup, "_numpy", lambda: None)
    assert fill(make_store(tmp_path / "b.sqlite")) == with_numpy
