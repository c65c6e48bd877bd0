"""The SQLite history's text index in a file of its own, filled behind the recorder
(gateway/history/indexfile.py, 008_index_file.sql): it follows a real recorder's batches,
never holds ingest up, and a lost, foreign or stale index file is filled again from the
history rather than trusted."""
from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from gateway import envelope as env
from gateway.history import indexfile, textindex
from gateway.history import query as q
from gateway.history.records import Record, record_of
from gateway.history.store import SqliteHistory
from gateway.messages import TypeIndex
from tests import history_fixture as fx
from tests.test_history_ingest import envelope, join, recording, stored, wait

INDEX = TypeIndex(())


def record(n: int, word: str = "common") -> Record:
    return record_of(fx.envelope(n, n, "git.push", ["alice"], ["dpkg"],
                                 {"note": f"{word} item{n:05d}"}), INDEX)


def found(store: SqliteHistory, term: str) -> set[int]:
    """Every message number ``contains=term`` finds (page by page)."""
    query = q.parse([("contains", term), ("rows_per_page", "100")])
    page = store.search(query)
    numbers = {int(r.msg_id[-12:]) for r in page.rows}
    while page.more:
        last = page.rows[-1]
        page = store.search(q.parse([("contains", term), ("rows_per_page", "100"),
                                     ("cursor", q.encode_cursor("desc", last.timestamp,
                                                                last.id))]))
        numbers |= {int(r.msg_id[-12:]) for r in page.rows}
    return numbers


def upto(history: Path) -> int:
    with sqlite3.connect(indexfile.index_path(history)) as db:
        return db.execute("SELECT upto FROM index_state").fetchone()[0]


def test_indexing_the_folded_text_finds_what_indexing_the_text_would():
    """The indexer copies ``messages_fold`` (folded text), not the text: the same
    trigrams, because folding twice changes nothing, for every character of the Basic
    Multilingual Plane and the supplementary cased scripts."""
    points = [c for c in [*range(0x20, 0xD800), *range(0xE000, 0x10000),
                          *range(0x10400, 0x10500), *range(0x1E900, 0x1E960)]]
    twice = [hex(c) for c in points
             if textindex.fold(textindex.fold(chr(c))) != textindex.fold(chr(c))]
    assert not twice
    text = "".join(map(chr, points))
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5 (body, tokenize = 'trigram', detail = none)")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab (t, 'row')")
    db.executemany("INSERT INTO t (rowid, body) VALUES (?, ?)",
                   [(1, text), (2, textindex.fold(text))])
    terms = db.execute("SELECT COUNT(*), SUM(doc) FROM v").fetchone()
    db.close()
    assert terms[0] > 60_000 and terms[1] == 2 * terms[0]  # every trigram in both texts


def test_the_index_follows_a_running_recorder_and_never_holds_it_up(make_settings, tmp_path):
    """A real recorder: its thread indexes each batch within a second of its commit;
    with the index file's write lock held elsewhere (a long catch-up, a backup) the
    recorder still stores everything, searches lag, and catch up once it is free."""
    db = tmp_path / "h.sqlite"
    with recording(make_settings, db) as (pub, recorder):
        first = join(pub, recorder)
        store = recorder.store
        assert store.indexer is not None and store.indexer.running
        for seq in range(first + 1, first + 301):
            pub.send_multipart(env.encode(envelope(seq, {"word": f"alpha{seq:05d}"})))
        wait(lambda: stored(db)[1] == first + 300)
        started = time.monotonic()
        wait(lambda: store.index_lag() == 0, timeout=10)
        assert store.index_lag() == 0 and time.monotonic() - started < 5
        assert len(found(store, "alpha")) == 300
        assert store.indexer.indexed >= 300  # by the thread: the store opened empty

        holder = sqlite3.connect(indexfile.index_path(db), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the index file's write lock, held
        try:
            for seq in range(first + 301, first + 601):
                pub.send_multipart(env.encode(envelope(seq, {"word": f"bravo{seq:05d}"})))
            wait(lambda: stored(db)[1] == first + 600, timeout=15)
            assert stored(db)[1] == first + 600  # ingest went on
            assert found(store, "bravo") == set() and store.index_lag() == 300
        finally:
            holder.execute("COMMIT")
            holder.close()
        wait(lambda: store.index_lag() == 0, timeout=15)
        assert len(found(store, "bravo")) == 300


def test_a_lost_index_file_is_filled_again_by_the_next_writer(tmp_path, caplog):
    path = tmp_path / "h.sqlite"
    store = SqliteHistory(path)
    store.add_many([record(n, "lost") for n in range(1, 201)])
    want = found(store, "lost")
    store.close()
    assert len(want) == 200
    for suffix in ("", "-wal", "-shm"):
        Path(f"{indexfile.index_path(path)}{suffix}").unlink(missing_ok=True)
    reader = SqliteHistory(path, readonly=True)  # a reader alone makes no index
    try:
        assert found(reader, "lost") == set() and reader.index_lag() == 200
        assert any("no index file" in m for m in caplog.messages)
    finally:
        reader.close()
    assert not indexfile.index_path(path).exists()
    store = SqliteHistory(path)  # a writer's open fills it from the history
    try:
        assert found(store, "lost") == want and store.index_lag() == 0
        assert _by(store, "user", "alice") == want == _by(store, "package", "dpkg")
        assert store.top_names("users", fx.T0 - 86400, fx.T0 + 10 * 86400, 3) == [("alice", 200)]
    finally:
        store.close()


def test_an_index_file_of_another_history_is_filled_again_not_trusted(tmp_path, caplog):
    ours, theirs = tmp_path / "ours.sqlite", tmp_path / "theirs.sqlite"
    for path, word in ((ours, "ours"), (theirs, "theirs")):
        store = SqliteHistory(path)
        store.add_many([record(n, word) for n in range(1, 51)])
        store.close()
    shutil.copyfile(indexfile.index_path(theirs), indexfile.index_path(ours))  # a copy gone astray
    caplog.set_level(logging.WARNING, logger="gateway.history.indexfile")
    store = SqliteHistory(ours)
    try:
        assert any("not this history's" in m for m in caplog.messages)
        assert found(store, "theirs") == set() and len(found(store, "ours")) == 50
    finally:
        store.close()


def test_an_index_ahead_of_a_history_restored_from_a_backup_is_filled_again(tmp_path):
    """The history is put back to a copy with fewer messages; the index, which has more,
    would otherwise take the ids written next for indexed ones."""
    path, backup = tmp_path / "h.sqlite", tmp_path / "backup.sqlite"
    store = SqliteHistory(path)
    store.add_many([record(n, "early") for n in range(1, 51)])
    store.writer().execute("VACUUM INTO ?", (str(backup),))
    store.add_many([record(n, "lost") for n in range(51, 101)])
    store.close()
    assert upto(path) == 100
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, path)
    store = SqliteHistory(path)
    try:
        store.add_many([record(n, "later") for n in range(51, 81)])  # ids 51-80 again
        assert len(found(store, "later")) == 30 and found(store, "lost") == set()
        assert len(found(store, "early")) == 50 and upto(path) == 80
    finally:
        store.close()


def test_a_catch_up_commits_a_chunk_at_a_time_and_stops_at_its_limit(tmp_path):
    """Bounds: a transaction of the index file holds at most ``chunk`` texts (its
    memory, its lock), and ``catch_up(limit)`` indexes at most ``limit``."""
    path = tmp_path / "h.sqlite"
    store = SqliteHistory(path)
    db = store.writer()  # written as a recorder in another process would: not indexed
    db.execute("BEGIN IMMEDIATE")
    for n in range(1, 1001):
        store.stage(db, record(n))
    store.flush(db)
    db.execute("COMMIT")
    assert store.index_lag() == 1000
    indexer = indexfile.Indexer(path, chunk=100)
    try:
        statements: list[str] = []
        indexer._connect().set_trace_callback(statements.append)
        assert indexer.catch_up(limit=250) == 250 and upto(path) == 250
        assert statements.count("COMMIT") == 3  # 100 + 100 + 50
        assert indexer.catch_up() == 750 and store.index_lag() == 0
        assert statements.count("COMMIT") == 3 + 8  # 7 full chunks, and one that found none
    finally:
        indexer.close()
        store.close()


def test_healthz_says_how_far_behind_the_text_index_is(tmp_path):
    store = SqliteHistory(tmp_path / "h.sqlite")
    db = store.writer()
    db.execute("BEGIN IMMEDIATE")
    for n in range(1, 8):
        store.stage(db, record(n))
    store.flush(db)
    db.execute("COMMIT")  # nobody said committed: an indexer elsewhere is behind
    try:
        with fx.serve(store) as url:
            health = httpx.get(f"{url}/healthz", timeout=10).json()
            assert health == {"status": "ok", "messages": 7, "index_behind": 7}
            store.committed()
            health = httpx.get(f"{url}/healthz", timeout=10).json()
            assert health["index_behind"] == 0
    finally:
        store.close()


def test_an_idle_indexer_polls_the_history_without_locking_its_index_file(tmp_path):
    """The thread looks for new texts every ``POLL_SECONDS``; with none it reads the
    history only: no write transaction of the index file (which a reader's catch-up or
    another writer would wait for) while the bus is quiet."""
    store = SqliteHistory(tmp_path / "h.sqlite")
    store.add_many([record(n) for n in range(1, 11)])
    assert store.indexer is not None
    statements: list[str] = []
    store.indexer._connect().set_trace_callback(statements.append)
    store.start_indexer()
    try:
        time.sleep(10 * indexfile.POLL_SECONDS)
        polls = [s for s in statements if "max(id)" in s]
        assert len(polls) >= 3  # it did look, several times
        assert "BEGIN IMMEDIATE" not in statements[1:]  # the first look may index
        store.add_many([record(n, "fresh") for n in range(11, 21)])  # woken: indexed
        wait(lambda: store.index_lag() == 0, timeout=5)
        assert len(found(store, "fresh")) == 10
    finally:
        store.close()


def _named(n: int) -> Record:
    users = ["alice", "bob"] if n % 4 == 0 else ["alice"] if n % 2 else ["carol"]
    return record_of(fx.envelope(n, n, "git.push", users, ["dpkg"] if n % 5 else ["hebcal"],
                                 {"note": f"named item{n:05d}"}), INDEX)


def _by(store: SqliteHistory, kind: str, name: str) -> set[int]:
    numbers: set[int] = set()
    query = q.parse([(kind, name), ("rows_per_page", "100")])
    page = store.search(query)
    numbers |= {int(r.msg_id[-12:]) for r in page.rows}
    while page.more:
        last = page.rows[-1]
        page = store.search(q.parse([(kind, name), ("rows_per_page", "100"),
                                     ("cursor", q.encode_cursor("desc", last.timestamp,
                                                                last.id))]))
        numbers |= {int(r.msg_id[-12:]) for r in page.rows}
    return numbers


def test_a_history_before_008_keeps_its_links_and_counts_in_the_index_file(tmp_path):
    """008 moves each message's names to ``message_names`` and drops the link tables;
    the index file made from them answers user and package queries, and the per-day
    counts, as the links did."""
    from gateway.history import migrate

    path = tmp_path / "h.sqlite"
    shipped = migrate.migrations("sqlite")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(migrate, "migrations", lambda backend: [m for m in shipped
                                                              if m.version < 8])
        SqliteHistory(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    records = [_named(n) for n in range(1, 201)]
    for r in records:
        fx.add_as_v1(db, r)  # the links, as a busgate before 008 wrote them
    db.execute("COMMIT")
    before = dict(db.execute("SELECT u.name, COUNT(*) FROM user_messages l"
                             " JOIN users u ON u.id = l.user_id GROUP BY u.name"))
    db.close()
    store = SqliteHistory(path)  # 008, then the index file filled
    try:
        with sqlite3.connect(path) as conn:
            tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
            assert {"user_messages", "stats_user_days"}.isdisjoint(tables)
            assert conn.execute("SELECT COUNT(*) FROM message_names").fetchone() == \
                (sum(len(r.users) + len(r.packages) for r in records),)
        for kind, name in (("user", "alice"), ("user", "bob"), ("user", "carol"),
                           ("package", "dpkg"), ("package", "hebcal")):
            want = {n for n, r in enumerate(records, 1)
                    if name in (r.users if kind == "user" else r.packages)}
            assert _by(store, kind, name) == want, (kind, name)
        top = store.top_names("users", fx.T0 - 86400, fx.T0 + 10 * 86400, 5)
        assert dict(top) == before == {"alice": 150, "bob": 50, "carol": 50}
    finally:
        store.close()


def test_a_closed_history_has_its_messages_in_its_files_not_in_their_logs(tmp_path):
    """Closing folds each write-ahead log back into its file (the writer closes last):
    a copy of the history file alone holds every message, the index file every text."""
    path = tmp_path / "h.sqlite"
    store = SqliteHistory(path)
    store.add_many([record(n, "kept") for n in range(1, 501)])
    assert store.count() == 500 and len(found(store, "kept")) == 500  # readers opened
    store.close()
    for log_file in (Path(f"{path}-wal"), Path(f"{indexfile.index_path(path)}-wal")):
        assert not log_file.exists() or log_file.stat().st_size == 0, log_file
    copy = tmp_path / "copy.sqlite"
    shutil.copyfile(path, copy)
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone() == (500,)
