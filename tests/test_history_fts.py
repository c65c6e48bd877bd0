"""The text index's merge setting (005_fts_automerge.sql, and the index file's since
008): an existing database upgraded has it, and ``contains`` finds the same messages
across the many segments that batches written before and after leave."""
from __future__ import annotations

import sqlite3

from gateway.history import indexfile, migrate
from gateway.history import query as q
from gateway.history.records import record_of
from gateway.history.store import SqliteHistory
from gateway.messages import TypeIndex
from tests import history_fixture as fx

INDEX = TypeIndex(())
WORDS = ("apple", "banana", "cherry", "damson", "elder")


def _record(n: int):
    text = f"{WORDS[n % 5]} {WORDS[n % 3]} item{n:04d}"
    return record_of(fx.envelope(n, 0, "git.push", [], [], {"note": text})
                     | {"timestamp": int(fx.T0) + n}, INDEX)


def _write_batches(store: SqliteHistory, numbers: range, size: int) -> None:
    """One transaction and one index segment per ``size`` messages, as the recorder."""
    db = store.writer()
    for start in range(numbers.start, numbers.stop, size):
        db.execute("BEGIN IMMEDIATE")
        for n in range(start, min(start + size, numbers.stop)):
            store.stage(db, _record(n))
        store.flush(db)
        db.execute("COMMIT")
        store.committed()  # a segment per batch in the index file


def _found(store: SqliteHistory, term: str) -> set[int]:
    found: set[int] = set()
    cursor = None
    while True:
        page = store.search(q.parse([("contains", term), ("rows_per_page", "100")]
                                    + ([("cursor", cursor)] if cursor else [])))
        found |= {int(row.msg_id[-12:]) for row in page.rows}
        if len(page.rows) < 100:
            return found
        last = page.rows[-1]
        cursor = q.encode_cursor("desc", last.timestamp, last.id)


def _config(path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT k, v FROM messages_text_config"))


def test_an_existing_history_gets_the_merge_setting_and_finds_every_message(
        tmp_path, monkeypatch):
    path = tmp_path / "h.sqlite"
    shipped = migrate.migrations("sqlite")
    assert "005_fts_automerge.sql" in [m.name for m in shipped]
    with monkeypatch.context() as patch:  # a history written by a busgate without 005
        patch.setattr(migrate, "migrations",  # (nor 007 and 008, which came later)
                      lambda backend: [m for m in shipped if m.version not in (5, 7, 8)])
        SqliteHistory(path).close()
    with sqlite3.connect(path, isolation_level=None) as db:  # its batches, in plain SQL
        for start in range(1, 301, 7):
            db.execute("BEGIN")
            for n in range(start, min(start + 7, 301)):
                fx.add_as_v1(db, _record(n))
            db.execute("COMMIT")
    assert "automerge" not in _config(path)
    store = SqliteHistory(path)  # upgrades: 005, 007 and 008 (the index file filled)
    assert _config(indexfile.index_path(path))["automerge"] == 8
    _write_batches(store, range(301, 601), 7)
    for term in (*WORDS, "item0299", "item0301", "ana"):
        want = {n for n in range(1, 601) if term in _record(n).text}
        assert want and _found(store, term) == want, term
    assert _found(store, "zzz") == set()
    with sqlite3.connect(indexfile.index_path(path)) as db:
        db.execute("INSERT INTO messages_text (messages_text) VALUES ('integrity-check')")
        segments = db.execute("SELECT COUNT(*) FROM messages_text_data").fetchone()[0]
    assert segments > 1  # many batches' segments, merged eight at a time
    store.close()


def test_a_new_history_has_the_merge_setting(tmp_path):
    SqliteHistory(tmp_path / "h.sqlite").close()
    assert _config(indexfile.index_path(tmp_path / "h.sqlite"))["automerge"] == 8
