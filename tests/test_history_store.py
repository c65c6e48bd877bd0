"""The history store's fast paths give the answers of the plain plan: a capped count
says so, a single user/package drives from its links, ``contains`` read newest id first
falls back when ids are not in time order (both backends: SQLite, and PostgreSQL on the
real server); the SQLite writer's name cache and staged texts survive rollbacks."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.history import indexfile
from gateway.history import query as q
from gateway.history.records import record_of
from gateway.history.store import SqliteHistory
from gateway.messages import TypeIndex
from tests import history_fixture as fx

INDEX = TypeIndex(())


def envelope(n: int, stamp: int, users: list[str], packages: list[str], text: str):
    return fx.envelope(n, 0, "git.push", users, packages, {"note": text}) | {
        "timestamp": stamp}


def page_ids(store: Any, items: list[tuple[str, str]]) -> list[int]:
    return [int(row.msg_id[-12:]) for row in store.search(q.parse(items)).rows]


def all_pages(store: Any, items: list[tuple[str, str]]) -> list[int]:
    """Every matching message, by following the cursor 5 at a time."""
    got: list[int] = []
    cursor = None
    while True:
        page = store.search(q.parse([*items, ("rows_per_page", "5")]
                                    + ([("cursor", cursor)] if cursor else [])))
        got += [int(row.msg_id[-12:]) for row in page.rows]
        if len(page.rows) < 5:
            return got
        last = page.rows[-1]
        order = dict(items).get("order", "desc")
        cursor = q.encode_cursor(order, last.timestamp, last.id)


@pytest.fixture
def shuffled(history_store):
    """60 messages stored newest first (a backfill after live recording): ids run
    against time. Every third names alice and says 'needle'. Both backends."""
    store = history_store(count_limit=7)
    base = int(fx.T0)
    store.add_many(record_of(envelope(n, base + (60 - n) * 10,
                                      ["alice"] if n % 3 == 0 else ["bob"], ["dpkg"],
                                      "needle here" if n % 3 == 0 else "hay"), INDEX)
                   for n in range(1, 61))
    return store


def test_a_count_past_count_limit_is_capped_and_says_so(shuffled):
    page = shuffled.search(q.parse([("package", "dpkg")]))
    assert (page.total, page.capped) == (7, True)
    page = shuffled.search(q.parse([("user", "alice"), ("topic", f"{fx.PREFIX}.nothing")]))
    assert (page.total, page.capped) == (0, False)
    page = shuffled.search(q.parse([("contains", "needle"), ("start", str(fx.T0)),
                                    ("end", str(fx.T0 + 60))]))
    assert (page.total, page.capped) == (3, False)  # 54, 57, 60: the newest 7 have 3


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("items", [
    [("contains", "needle")],
    [("contains", "needle"), ("user", "alice")],
    [("user", "alice")],
    [("package", "dpkg"), ("not_user", "bob")],
    [("contains", "hay"), ("package", "dpkg")],
], ids=["contains", "contains+user", "user", "package-not_user", "contains+package"])
def test_fast_paths_answer_like_the_time_order(shuffled, items, order):
    want = sorted((n for n in range(1, 61)
                   if ("needle" in dict(items).get("contains", "needle") and n % 3 == 0)
                   or (dict(items).get("contains") == "hay" and n % 3)),
                  reverse=order == "asc")  # newest = smallest n
    if dict(items).get("contains") is None:
        want = sorted((n for n in range(1, 61) if n % 3 == 0), reverse=order == "asc")
    if dict(items).get("user") == "alice":
        want = [n for n in want if n % 3 == 0]
    items = [*items, ("order", order)]
    assert page_ids(shuffled, [*items, ("rows_per_page", "5")]) == want[:5]
    assert page_ids(shuffled, [*items, ("rows_per_page", "5"), ("page", "2")]) == want[5:10]
    assert all_pages(shuffled, items) == want


def test_contains_in_time_order_reads_only_the_newest(tmp_path):
    """ids in time order (the recorder's usual case): the page is the newest matches."""
    store = SqliteHistory(tmp_path / "h.sqlite")
    store.add_many(record_of(envelope(n, int(fx.T0) + n, [], [], f"word {n}"), INDEX)
                   for n in range(1, 201))
    assert page_ids(store, [("contains", "word")]) == list(range(200, 175, -1))
    assert page_ids(store, [("contains", "word"), ("order", "asc")]) == list(range(1, 26))
    assert page_ids(store, [("contains", "word 19")]) == [199, 198, 197, 196, 195, 194, 193,
                                                          192, 191, 190, 19]
    store.close()


def test_raw_says_total_capped_and_still_gives_a_cursor(shuffled):
    with fx.serve(shuffled) as url, httpx.Client(base_url=url, timeout=10) as client:
        body = client.get("/raw", params={"package": "dpkg", "rows_per_page": 5,
                                          "page": 2}).json()
    assert (body["total"], body["total_capped"], body["pages"]) == (7, True, 2)
    assert body["count"] == 5 and body["cursor"]  # more than the capped total says


def test_name_cache_is_bounded_and_forgotten_after_a_rollback(tmp_path):
    store = SqliteHistory(tmp_path / "h.sqlite", name_cache=2)
    db = store.writer()
    db.execute("BEGIN IMMEDIATE")
    store.stage(db, record_of(envelope(1, int(fx.T0), ["ghost"], ["gone"], "x"), INDEX))
    db.execute("ROLLBACK")
    store.forget()
    store.add_many(record_of(envelope(n, int(fx.T0) + n, [f"u{n % 5}", "ghost"], ["p"], "y"),
                             INDEX) for n in range(2, 12))
    for n in range(2, 12):
        (row,) = store.search(q.parse([("user", f"u{n % 5}"), ("user", "ghost"),
                                       ("start", str(fx.T0 + n)),
                                       ("end", str(fx.T0 + n))])).rows
        assert row.users == tuple(sorted([f"u{n % 5}", "ghost"])) and row.packages == ("p",)
    assert len(store._names["users"]) <= 2
    store.close()


def test_a_batch_is_written_at_flush_once_by_msg_id_and_a_refused_one_alone(tmp_path):
    store = SqliteHistory(tmp_path / "h.sqlite")
    store.add_many([record_of(envelope(1, int(fx.T0), ["ann"], [], "old"), INDEX)])
    db = store.writer()
    db.execute("BEGIN IMMEDIATE")
    for n, text in ((2, "fine"), (2, "fine"), (1, "old"), (3, "later")):  # doubles
        store.stage(db, record_of(envelope(n, int(fx.T0) + n, ["ann", "bo"], ["p"], text),
                                  INDEX))
    assert store.msg_ids() == [fx.msg_id(1)]  # nothing written before flush
    assert store.flush(db) == 2 and store.flush(db) == 0
    db.execute("COMMIT")
    store.committed()  # as the recorder's consumer does after each commit
    assert store.msg_ids() == [fx.msg_id(n) for n in (1, 2, 3)]
    assert page_ids(store, [("contains", "fine")]) == [2]
    assert page_ids(store, [("user", "bo")]) == [3, 2]
    # a record SQLite refuses (a lone surrogate cannot be UTF-8) is left out alone
    db.execute("BEGIN IMMEDIATE")
    store.stage(db, record_of(envelope(4, int(fx.T0), ["\ud800"], [], "bad"), INDEX))
    store.stage(db, record_of(envelope(5, int(fx.T0), ["cy"], [], "good"), INDEX))
    assert store.flush(db) == 1
    db.execute("COMMIT")
    store.committed()
    assert store.msg_ids()[-1] == fx.msg_id(5)
    assert page_ids(store, [("contains", "bad")]) == []
    assert page_ids(store, [("user", "cy")]) == [5]
    with sqlite3.connect(indexfile.index_path(store.path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages_text").fetchone() == (4,)
    store.close()


def test_a_rolled_back_batch_leaves_nothing_staged(tmp_path):
    store = SqliteHistory(tmp_path / "h.sqlite")
    db = store.writer()
    db.execute("BEGIN IMMEDIATE")
    store.stage(db, record_of(envelope(1, int(fx.T0), [], [], "poison"), INDEX))
    db.execute("ROLLBACK")
    store.forget()
    db.execute("BEGIN IMMEDIATE")
    store.stage(db, record_of(envelope(2, int(fx.T0), [], [], "fine"), INDEX))
    assert store.flush(db) == 1
    db.execute("COMMIT")
    store.committed()
    assert store.msg_ids() == [fx.msg_id(2)]
    assert page_ids(store, [("contains", "poison")]) == []
    store.close()


def test_the_text_index_holds_the_body_values_not_its_keys(tmp_path):
    from gateway.history.records import text_of

    body = {"source": "hebcal", "files": [{"path": "déjà/vu.c", "added": 3}],
            "forced": True, "old": None, "ratio": 0.5}
    assert text_of(body) == "hebcal\ndéjà/vu.c\n3\n0.5"
    store = SqliteHistory(tmp_path / "h.sqlite")
    store.add_many([record_of(envelope(1, int(fx.T0), [], [], "x") | {"msg": body}, INDEX)])
    assert page_ids(store, [("contains", "déjà/vu")]) == [1]
    assert page_ids(store, [("contains", "files")]) == []  # a key, not a value
    store.close()


def test_the_recorders_connection_gets_the_page_cache(tmp_path):
    store = SqliteHistory(tmp_path / "h.sqlite", cache_mb=3)
    assert store.writer().execute("PRAGMA cache_size").fetchone() == (-3 * 1024,)
    other = sqlite3.connect(store.path)  # as the consumer's position connection
    store.tune(other)
    assert other.execute("PRAGMA cache_size").fetchone() == (-3 * 1024,)
    other.close()
    store.close()


def _wal_high_water(path: Path) -> int:
    """Bytes the write-ahead log reaches over 30 batches of 100 through a tuned
    connection (the recorder's position's)."""
    store = SqliteHistory(path)
    other = sqlite3.connect(store.path, isolation_level=None)
    store.tune(other)
    wal = Path(str(store.path) + "-wal")
    biggest = 0
    for batch in range(30):
        other.execute("BEGIN IMMEDIATE")
        for n in range(batch * 100 + 1, batch * 100 + 101):
            store.stage(other, record_of(envelope(n, int(fx.T0) + n, [], [], "x" * 2000),
                                         INDEX))
        assert store.flush(other) == 100
        other.execute("COMMIT")
        biggest = max(biggest, wal.stat().st_size)
    assert store.count() == 3000
    assert other.execute("PRAGMA wal_autocheckpoint").fetchone() == \
        store.writer().execute("PRAGMA wal_autocheckpoint").fetchone()
    other.close()
    store.close()
    return biggest


def test_the_write_ahead_log_is_bounded_by_its_checkpoint_pages(tmp_path, monkeypatch):
    from gateway.history import store as history_store

    monkeypatch.setattr(history_store, "WAL_CHECKPOINT_PAGES", 1_000_000)
    unbounded = _wal_high_water(tmp_path / "unbounded.sqlite")  # every batch kept
    monkeypatch.setattr(history_store, "WAL_CHECKPOINT_PAGES", 40)
    bounded = _wal_high_water(tmp_path / "bounded.sqlite")
    # checkpointed after each commit past 40 pages: the log holds about one batch
    assert bounded < unbounded / 4, (bounded, unbounded)


class _Clock:
    """``store.time`` with a monotonic clock that moves 10 ms at each look (the progress
    handler looks every PROGRESS_STEPS virtual-machine steps): a count's budget runs out
    after a known amount of work, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        self.now += 0.010
        return self.now


FREQUENT = 3000  # alice's messages; every other one on topic git.push: 1,500 match


@pytest.fixture
def frequent(tmp_path) -> Path:
    """A SQLite history where alice is frequent (as in bench/history.py at scale)."""
    path = tmp_path / "h.sqlite"
    store = SqliteHistory(path)
    store.add_many(record_of(fx.envelope(n, n / 60, "git.push" if n % 2 else "bug.new",
                                         ["alice"], ["dpkg"], {"note": f"n {n}"}), INDEX)
                   for n in range(1, FREQUENT + 1))
    store.close()
    return path


def test_a_sqlite_count_past_count_budget_ms_is_a_lower_bound(frequent, monkeypatch):
    from gateway.history import store as store_module

    items = [("user", "alice"), ("topic", f"{fx.PREFIX}.git.push"), ("rows_per_page", "5")]
    exact = SqliteHistory(frequent, count_budget_ms=0)  # 0: no budget
    want = [page_ids(exact, [*items, ("page", str(p))]) for p in (1, 3)]
    assert exact.search(q.parse(items)).total == FREQUENT // 2
    monkeypatch.setattr(store_module, "time", _Clock())
    budget = SqliteHistory(frequent, count_budget_ms=5)  # past at the first look
    for page, got_rows in ((1, want[0]), (3, want[1])):
        got = budget.search(q.parse([*items, ("page", str(page))]))
        assert [int(r.msg_id[-12:]) for r in got.rows] == got_rows  # rows stay exact
        seen = page * 5 + 1  # the pages up to this one, and one more: what the page proves
        assert (got.total, got.capped, got.more) == (seen, True, True)
    # the page holding the last match knows the total without counting: exact
    last = budget.search(q.parse([*items[:2], ("rows_per_page", "100"), ("page", "15")]))
    assert (last.total, last.capped, len(last.rows), last.more) == (1500, False, 100, False)
    # within the budget (the same clock): exact; budget 0 under the same clock: exact
    for roomy in (SqliteHistory(frequent, count_budget_ms=3000), exact):
        got = roomy.search(q.parse(items))
        assert (got.total, got.capped, got.more) == (FREQUENT // 2, False, True)
        roomy.close()
    budget.close()


def test_count_budget_ms_reaches_the_sqlite_store(make_settings, tmp_path):
    from gateway.history import backends

    settings = make_settings(history={"database": str(tmp_path / "h.sqlite"),
                                      "count_budget_ms": 7})
    store = backends.open_history(settings)
    assert store.count_budget == pytest.approx(0.007)  # type: ignore[attr-defined]
    store.close()
    store = backends.open_history(make_settings(history={
        "database": str(tmp_path / "h.sqlite"), "count_budget_ms": 0}))
    assert store.count_budget == float("inf")  # type: ignore[attr-defined]
    store.close()
