"""``contains`` through the text index without positions (007_fts_detail_none.sql): every
answer is the one the index with positions gave (FTS5 trigram, detail=full, phrase
queries), whatever the index's candidates (a term's trigrams found apart, across two
values of a body), whichever read path, count included; folding is the index's own
(Jörg/JÖRG, Greek, Cyrillic); and a history written before 007 answers the same after
its upgrade.

The oracle is the old index itself, built beside the store from the same texts: what
``contains`` answered before is what it must answer now."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.history import indexfile, migrate, textindex
from gateway.history import query as q
from gateway.history.records import Record, record_of
from gateway.history.store import SqliteHistory
from gateway.messages import TypeIndex
from tests import history_fixture as fx
from tests.test_history_plans import PATHS, force

INDEX = TypeIndex(())

#: Bodies whose texts make the trigram candidates of the terms below differ from their
#: matches: ``libc6`` spelled apart, a term across two values, case and non-ASCII forms.
BODIES = [
    {"note": "libc6 upload"},                       # libc6
    {"note": "libxyz and bc6 here, ibc too"},       # every trigram of libc6, apart
    {"a": "glibc", "b": "c6 then"},                 # libc6 across two values (no match)
    {"a": "abcd", "b": "cdef"},                     # abcdef's trigrams across two values
    {"note": "xabcdefx"},                           # abcdef
    {"who": "Jörg Jensen"},
    {"who": "JÖRG JENSEN"},
    {"who": "jorg without accent"},
    {"title": "ΣΊΣΥΦΟΣ κύλησε"},
    {"title": "σίσυφος again"},
    {"title": "Привет, мир"},
    {"title": "ПРИВЕТ МИР"},
    {"title": "straße", "n": 12345},
    {"title": "STRASSE"},
    {"q": 'say "quoted" words'},
    {"n": 3.25, "m": [1, 2, "unstable"]},
    {"note": "unstable\nsid"},
    {"note": "stable unsta ble"},                   # un/sta/ble, not "unstable"
]
#: Messages of the fixture: the bodies again and again, among filler (a term's
#: candidates and matches sparse, then dense), users and topics to combine with.
N = 360
TERMS = ["libc6", "LIBC6", "abcdef", "bcde", "abc", "Jörg", "JÖRG", "jörg jensen", "ÖRG",
         "jorg", "σίσυφος", "ΣΊΣΥΦΟΣ", "ύλη", "привет", "ПРИВЕТ, МИР", "straße", "STRASSE",
         '"quoted"', "d wo", "3.25", "12345", "unstable", "nstab", "sid", "filler",
         "zzzz"]


def body(n: int) -> dict:  # type: ignore[type-arg]
    return BODIES[(n - n // 3 - 1) % len(BODIES)] if n % 3 else {"note": f"filler {n}"}


def record(n: int) -> Record:
    return record_of(fx.envelope(n, n / 2, "git.push" if n % 2 else "dak.upload.accepted",
                                 ["alice", "bob"] if n % 4 == 0 else ["alice"],
                                 ["dpkg"] if n % 5 else ["hebcal"], body(n)), INDEX)


def old_index(records: list[tuple[int, Record]]) -> sqlite3.Connection:
    """The text index as it was before 007 (positions, phrase queries), in memory."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5 (body, content = '', tokenize = 'trigram')")
    db.executemany("INSERT INTO t (rowid, body) VALUES (?, ?)",
                   [(n, r.text) for n, r in records])
    return db


def old_answer(oracle: sqlite3.Connection, terms: list[str]) -> set[int]:
    phrase = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
    return {n for (n,) in oracle.execute("SELECT rowid FROM t WHERE t MATCH ?", (phrase,))}


def every(store: SqliteHistory, items: list[tuple[str, str]]) -> tuple[list[int], int, bool]:
    """Every message number ``items`` finds, page by page (cursor), and the first page's
    total and capped."""
    query = q.parse([*items, ("rows_per_page", "7")])
    page = store.search(query)
    total, capped = page.total, page.capped
    found = [int(r.msg_id[-12:]) for r in page.rows]
    while page.more:
        last = page.rows[-1]
        page = store.search(replace(query, cursor=(last.timestamp, last.id)))
        found += [int(r.msg_id[-12:]) for r in page.rows]
    return found, total, capped


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    store = SqliteHistory(tmp_path_factory.mktemp("textindex") / "h.sqlite")
    records = [(n, record(n)) for n in range(1, N + 1)]
    db = store.writer()
    for start in range(0, N, 50):  # as the recorder writes: batches
        db.execute("BEGIN IMMEDIATE")
        for _, r in records[start:start + 50]:
            store.stage(db, r)
        store.flush(db)
        db.execute("COMMIT")
        store.committed()
    oracle = old_index(records)
    yield store, dict(records), oracle
    oracle.close()
    store.close()


def test_the_index_has_no_positions_and_candidates_are_not_matches(filled):
    """The premise: the index finds libc6's trigrams apart (candidates that are no
    match), so without the check the answers would be wrong."""
    store, _, oracle = filled
    with sqlite3.connect(indexfile.index_path(store.path)) as db:
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'messages_text'"
                            ).fetchone()
        assert "detail = none" in sql
        candidates = {n for (n,) in db.execute(
            "SELECT rowid FROM messages_text WHERE messages_text MATCH ?",
            (textindex.match(["libc6"]),))}
    assert candidates > old_answer(oracle, ["libc6"]) != set()


@pytest.mark.parametrize("term", TERMS)
def test_contains_answers_as_the_index_with_positions(filled, term):
    """Every page (by cursor) and the total of ``contains`` alone: the old index's."""
    store, records, oracle = filled
    want = sorted(old_answer(oracle, [term]), key=lambda n: (records[n].timestamp, n),
                  reverse=True)
    found, total, capped = every(store, [("contains", term)])
    assert found == want
    assert (total, capped) == (len(want), False)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("items", [
    [("contains", "libc6"), ("user", "bob")],
    [("contains", "abcdef"), ("user", "alice"), ("order", "asc")],
    [("contains", "JÖRG"), ("package", "dpkg")],
    [("contains", "σίσυφος"), ("topic", f"{fx.PREFIX}.git.push")],
    [("contains", "привет"), ("category", "dak")],
    [("contains", "libc6"), ("contains", "abcdef"), ("user", "alice"),
     ("not_package", "hebcal")],
    [("contains", "unstable"), ("user", "alice"), ("start", repr(fx.T0 + 20 * fx.HOUR)),
     ("end", repr(fx.T0 + 150 * fx.HOUR))],
    [("contains", "libc6"), ("not_user", "bob")],
], ids=["user", "user-asc", "package", "topic", "category", "two-terms", "start", "not-user"])
def test_contains_with_other_filters_answers_as_the_index_with_positions(
        filled, items, path, monkeypatch):
    """Each read path of ``contains`` with another filter (the term's candidates first,
    the other filter's index walked by ranges or look-ups) and its count."""
    force(path, monkeypatch)
    store, records, oracle = filled
    given: dict[str, list[str]] = {}
    for key, value in items:
        given.setdefault(key, []).append(value)

    def kept(r: Record) -> bool:
        return all((
            not given.get("user") or bool(set(given["user"]) & set(r.users)),
            not given.get("package") or bool(set(given["package"]) & set(r.packages)),
            not set(given.get("not_user", [])) & set(r.users),
            not set(given.get("not_package", [])) & set(r.packages),
            not given.get("topic") or r.topic in given["topic"],
            not given.get("category") or r.category in given["category"],
            "start" not in given or r.timestamp >= float(given["start"][0]),
            "end" not in given or r.timestamp <= float(given["end"][0])))

    want = [n for n in old_answer(oracle, given["contains"]) if kept(records[n])]
    want.sort(key=lambda n: (records[n].timestamp, n), reverse=("order", "asc") not in items)
    found, total, capped = every(store, items)
    assert found == want
    assert (total, capped) == (len(want), False)


def test_a_count_cut_by_its_budget_is_a_lower_bound_never_the_candidates(filled,
                                                                         monkeypatch):
    """A count that cannot finish in ``count_budget_ms`` says at least what the page
    proves, capped; a finished one, every match and no candidate."""
    store, _, oracle = filled
    want = len(old_answer(oracle, ["libc6"]))
    with sqlite3.connect(indexfile.index_path(store.path)) as db:
        (candidates,) = db.execute(
            "SELECT COUNT(*) FROM messages_text WHERE messages_text MATCH ?",
            (textindex.match(["libc6"]),)).fetchone()
    assert candidates > want > 7
    page = store.search(q.parse([("contains", "libc6"), ("rows_per_page", "7")]))
    assert (page.total, page.capped) == (want, False)
    cut = SqliteHistory(store.path, readonly=True)
    monkeypatch.setattr(cut, "_count", lambda *args: None)  # as past the budget
    try:
        page = cut.search(q.parse([("contains", "libc6"), ("rows_per_page", "7")]))
    finally:
        cut.close()
    assert (page.total, page.capped, page.more) == (8, True, True)


def test_folding_is_the_trigram_index_s_own_for_every_character():
    """:func:`textindex.fold` maps each character of the Basic Multilingual Plane (and the
    supplementary cased scripts) where the trigram tokenizer folds it, one for one."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5 (body, tokenize = 'trigram')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab (t, 'instance')")
    points = [c for c in [*range(0x20, 0xD800), *range(0xE000, 0x10000),
                          *range(0x10400, 0x10500), *range(0x1E900, 0x1E960)]]
    db.executemany("INSERT INTO t (rowid, body) VALUES (?, ?)",
                   [(c, chr(c) * 3) for c in points])
    folded = {doc: term[0] for term, doc in db.execute("SELECT term, doc FROM v")}
    db.close()
    wrong = [hex(c) for c in points if textindex.fold(chr(c)) != folded.get(c, chr(c))]
    assert not wrong
    assert textindex.fold("Jörg JÖRG ΣΊΣΥΦΟΣ ПРИВЕТ STRAẞE") == \
        "jörg jörg σίσυφοσ привет straße"


def test_a_history_written_before_007_answers_the_same_after_its_upgrade(tmp_path,
                                                                          caplog):
    """The old index (positions) is dropped; the folded texts are made from the stored
    envelopes (007) and the index file is filled from them (008): every ``contains``
    answer is the same before and after."""
    path = tmp_path / "h.sqlite"
    shipped = migrate.migrations("sqlite")
    old = [m for m in shipped if m.version < 7]
    import gateway.history.migrate as module

    with pytest.MonkeyPatch.context() as patch:  # a history written by a busgate before 007
        patch.setattr(module, "migrations", lambda backend: old)
        SqliteHistory(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    for start in range(1, N + 1, 40):
        db.execute("BEGIN")
        for n in range(start, min(start + 40, N + 1)):
            fx.add_as_v1(db, record(n))
        db.execute("COMMIT")
    before = {term: {n for (n,) in db.execute(
        "SELECT CAST(substr(m.msg_id, -12) AS INTEGER) FROM messages_text t"
        " JOIN messages m ON m.id = t.rowid WHERE messages_text MATCH ?",
        ('"' + term.replace('"', '""') + '"',))} for term in TERMS}
    db.close()
    assert sum(map(len, before.values())) > 100
    caplog.set_level(logging.INFO, logger="gateway.history.migrate")
    store = SqliteHistory(path)  # migrates: 007 folds the texts, 008 moves the index
    try:
        assert f"history: applying 007_fts_detail_none.sql to {path}" in caplog.messages
        assert f"history: applying 008_index_file.sql to {path}" in caplog.messages
        assert Path(f"{path}-wal").stat().st_size == 0
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM messages_fold").fetchone() == (N,)
            assert conn.execute("SELECT name FROM sqlite_master"
                                " WHERE name LIKE 'messages_text%'").fetchall() == []
        with sqlite3.connect(indexfile.index_path(path)) as conn:
            (sql,) = conn.execute("SELECT sql FROM sqlite_master"
                                  " WHERE name = 'messages_text'").fetchone()
            assert "detail = none" in sql
            config = dict(conn.execute("SELECT k, v FROM messages_text_config"))
            assert config["automerge"] == 8
            assert conn.execute("SELECT upto FROM index_state").fetchone() == (N,)
        for term in TERMS:
            found, total, _ = every(store, [("contains", term)])
            assert sorted(found) == sorted(before[term]) and total == len(found), term
        store.add_many([record(N + 1)])  # written after: found with the rest
        found, _, _ = every(store, [("contains", "libc6")])
        assert N + 1 in found or "libc6" not in record(N + 1).text
        assert len(found) == len(before["libc6"]) + ("libc6" in record(N + 1).text)
    finally:
        store.close()


def test_terms_of_three_characters_need_no_check_and_shorter_find_nothing():
    assert textindex.recheck_terms(["abc", "sid"]) is None
    assert textindex.recheck_terms(["ab"]) is None
    assert textindex.recheck_terms(["ab", "libc6"]) == ["libc6"]
    assert textindex.recheck_sql(["abc"], "m.id") == ("", [])
    assert textindex.match(["LiBc6", "ab", 'a"b']) == \
        '("lib" AND "ibc" AND "bc6") OR "ab" OR ("a""b")'
    assert textindex.match(["x" * 400]) == '("xxx")'


def test_an_integer_past_64_bits_is_found_by_its_digits_after_the_upgrade(tmp_path):
    """007 reads the stored envelopes back exactly (orjson would make such an integer a
    float, ``1.2345678901234568e+29``), so the rebuilt text is the one the recorder
    indexed."""
    path = tmp_path / "h.sqlite"
    import gateway.history.migrate as module

    old = [m for m in migrate.migrations("sqlite") if m.version < 7]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "migrations", lambda backend: old)
        SqliteHistory(path).close()
    big = 123456789012345678901234567890
    stored = record_of(fx.envelope(1, 0.5, "git.push", ["alice"], ["dpkg"], {"size": big}),
                       INDEX)
    assert str(big) in stored.text
    db = sqlite3.connect(path, isolation_level=None)
    fx.add_as_v1(db, stored)
    db.close()
    store = SqliteHistory(path)  # migrates: 007 builds the index again
    try:
        assert every(store, [("contains", "678901234567890")])[0] == [1]
    finally:
        store.close()
