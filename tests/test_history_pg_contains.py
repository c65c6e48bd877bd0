"""PostgreSQL ``contains`` with a topic or category (``011_contains_facets.sql``): one GIN
intersection of the topic, category and the body's words, read when the term is rare in
the newest rows of the rest of the query (``pgstore._probe``), and the same answers as
a filter of every message, empty ones included, whichever way the page was found.

Why plans: at 1,000,000 messages a frequent term with a topic it never appears with
(contains=debian.org&category=git) read 1,000,000 rows in time order, 0.8-1.2 s, where
the intersection takes 30-80 ms; on a test's small history both take microseconds.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from gateway.history import pgstore
from gateway.history import query as q
from gateway.history.pgstore import PostgresHistory
from gateway.history.records import record_of
from gateway.messages import TypeIndex
from tests import history_fixture as fx

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

#: Messages of the fixture, an hour apart: (topic tail, body).
N = 240
TOPICS = ("git.push", "git.tag", "dak.upload.accepted", "debbugs.bug.close")


def body(n: int) -> dict[str, Any]:
    """debian.org in every dak and debbugs message, its words apart in git's (as at a
    million: "salsa.example.org/debian/pkg"), Maintainer in every 7th bug, 50%_off in
    two."""
    tail = TOPICS[n % len(TOPICS)]
    if tail.startswith("git"):
        return {"url": f"https://salsa.example.org/debian/pkg{n}"}
    note = "Maintainer" if tail.startswith("debbugs") and n % 7 == 0 else "x"
    return {"from": f"user{n}@debian.org", "note": note,
            "deal": "50%_off" if n in (12, 200) else "full"}


@pytest.fixture(scope="module")
def store(pg_databases) -> Iterator[PostgresHistory]:  # type: ignore[no-untyped-def]
    history = PostgresHistory(pg_databases())
    history.add_many(record_of(fx.envelope(n, n, TOPICS[n % len(TOPICS)], [], [], body(n)),
                               TypeIndex(())) for n in range(1, N + 1))
    history._timed(lambda db: None)  # the pool is up
    with psycopg.connect(history.url, autocommit=True) as conn:
        conn.execute("ANALYZE messages")
    yield history
    history.close()


def brute(store: PostgresHistory, items: list[tuple[str, str]]) -> list[str]:
    """The msg_ids ``items`` match, newest first, by Python over every row."""
    query = q.parse(items)
    rows = store._timed(lambda db: db.execute(
        "SELECT msg_id, topic, category, body FROM messages"
        " ORDER BY timestamp DESC, id DESC").fetchall())
    return [msg_id for msg_id, topic, category, text in rows
            if (not query.topics or topic in query.topics)
            and (not query.categories or category in query.categories)
            and topic not in query.not_topics and category not in query.not_categories
            and any(t.lower() in text.lower() for t in query.contains)]


CASES = [
    [("contains", "debian.org"), ("category", "git")],  # words apart: empty
    [("contains", "debian.org"), ("category", "dak")],  # frequent there
    [("contains", "Maintainer"), ("category", "debbugs")],  # rare there
    [("contains", "Maintainer"), ("topic", f"{fx.PREFIX}.dak.upload.accepted")],  # none
    [("contains", "debian.org"), ("topic", f"{fx.PREFIX}.debbugs.bug.close"),
     ("rows_per_page", "7"), ("page", "2")],
    [("contains", "ORG/DEBIAN"), ("category", "git"), ("category", "dak")],
    [("contains", "50%_off"), ("category", "dak"), ("category", "debbugs")],
    [("contains", "maintainer"), ("contains", "pkg1"), ("category", "git"),
     ("category", "debbugs")],
    [("contains", "debian.org"), ("not_category", "dak")],
    [("contains", "debian.org"), ("category", "dak"), ("order", "asc")],
    [("contains", "Maintainer")],
    [("contains", "nowhere.at.all")],
    # exclusions, asked as what they keep (pgstore._kept)
    [("contains", "debian.org"), ("not_category", "dak"), ("not_category", "debbugs")],
    [("contains", "debian.org"), ("not_category", "git"), ("not_category", "dak"),
     ("not_category", "debbugs")],  # every category stored excluded: empty
    [("contains", "debian.org"), ("not_category", "nosuchservice")],
    [("contains", "debian.org"), ("category", "dak"), ("category", "git"),
     ("not_category", "dak")],
    [("contains", "debian.org"), ("not_topic", f"{fx.PREFIX}.dak.upload.accepted"),
     ("not_topic", f"{fx.PREFIX}.debbugs.bug.close")],
    [("contains", "Maintainer"), ("not_topic", f"{fx.PREFIX}.git.push"),
     ("not_category", "dak"), ("rows_per_page", "3"), ("page", "2")],
    [("contains", "debian.org"), ("topic", f"{fx.PREFIX}.git.push"),
     ("not_topic", f"{fx.PREFIX}.git.push")],  # the one topic named excluded: empty
]


@pytest.mark.parametrize("max_kept", [1, 64])
@pytest.mark.parametrize("probe_rows", [3, 2000])
@pytest.mark.parametrize("items", CASES)
def test_contains_with_a_topic_answers_like_a_filter_of_every_message(
        store, items, probe_rows, max_kept, monkeypatch):
    """The page, the next one by cursor and the total, exactly, whether the newest rows
    held the page (``PROBE_ROWS`` 2000: the whole fixture) or not (3: the index's
    intersection), and whether an exclusion is asked as the values it keeps
    (``MAX_KEPT`` 64) or, past the bound (1), filtered."""
    monkeypatch.setattr(pgstore, "PROBE_ROWS", probe_rows)
    monkeypatch.setattr(pgstore, "MAX_KEPT", max_kept)
    assert_like_brute(store, items)


def _kept(store: PostgresHistory, items: list[tuple[str, str]]) -> q.Query | None:
    return store._timed(lambda db: pgstore._kept(db, q.parse(items)))


def test_an_exclusion_with_contains_is_asked_as_the_values_stored_it_keeps(store):
    """``not_category`` / ``not_topic`` with ``contains`` become the categories (topics)
    stored less the excluded ones, so the index's intersection serves them (its plan:
    one GIN scan per kept value, no exclusion left to filter); none left is an empty
    answer without a query; a named value is kept without reading what is stored;
    without ``contains``, or past ``MAX_KEPT``, the query is left as it is."""
    kept = _kept(store, [("contains", "xyz"), ("not_category", "dak")])
    assert kept is not None
    assert (kept.categories, kept.not_categories) == (("debbugs", "git"), ())
    kept = _kept(store, [("contains", "xyz"), ("not_topic", f"{fx.PREFIX}.git.tag")])
    assert kept is not None and kept.not_topics == ()
    assert kept.topics == tuple(sorted(f"{fx.PREFIX}.{t}" for t in TOPICS
                                       if t != "git.tag"))
    assert _kept(store, [("contains", "xyz"), ("not_category", "dak"),
                         ("not_category", "git"), ("not_category", "debbugs")]) is None
    named = _kept(store, [("contains", "xyz"), ("category", "zz"), ("category", "dak"),
                          ("not_category", "dak")])
    assert named is not None and named.categories == ("zz",)
    alone = q.parse([("not_category", "dak")])
    assert _kept(store, [("not_category", "dak")]) == alone
    where, _ = pgstore._where(kept)
    assert "<> ALL" not in where and "m.topic = ANY(%s)" in where


def test_the_values_kept_are_read_in_each_query_s_own_snapshot(store, pg_databases):
    """A category stored after a first query is among those the next one keeps (nothing
    is cached), and its message is found."""
    history = PostgresHistory(pg_databases())
    try:
        history.add_many([record_of(fx.envelope(1, 1, "git.push", [], [], body(1)),
                                    TypeIndex(()))])
        items = [("contains", "debian"), ("not_category", "dak")]
        assert [r.msg_id for r in history.search(q.parse(items)).rows] == [fx.msg_id(1)]
        history.add_many([record_of(fx.envelope(2, 2, "debbugs.bug.close", [], [], body(2)),
                                    TypeIndex(()))])
        assert history.search(q.parse(items)).total == 2
        assert history.search(q.parse([*items, ("not_category", "git")])).total == 1
    finally:
        history.close()


def assert_like_brute(store: PostgresHistory, items: list[tuple[str, str]]) -> None:
    """The page, the next one by cursor (from its last row) and the total are
    :func:`brute`'s."""
    query = q.parse(items)
    want = brute(store, items)
    if query.order == "asc":
        want.reverse()
    page = store.search(query)
    first = (query.page - 1) * query.rows_per_page
    assert [r.msg_id for r in page.rows] == want[first:first + query.rows_per_page]
    assert (page.total, page.capped) == (len(want), False)
    if page.rows:
        last = page.rows[-1]
        nxt = store.search(replace(query, page=1, cursor=(last.timestamp, last.id)))
        start = first + len(page.rows)
        assert [r.msg_id for r in nxt.rows] == want[start:start + query.rows_per_page]


def _plan(store: PostgresHistory, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The nodes of the plan of the page ``search`` reads when the term is rare in the
    newest rows (``_BITMAP_ONLY`` set, as there), with the topic's and category's own
    btrees dropped for it (rolled back): on a few hundred rows the planner reads the
    topic's btree and filters, which at a million is what costs."""
    source, where, params, stamp, row = pgstore._source(q.parse(items))
    with psycopg.connect(store.url) as conn:
        conn.execute("DROP INDEX messages_topic, messages_category")
        conn.execute(pgstore._BITMAP_ONLY)
        (found,) = conn.execute(f"EXPLAIN (FORMAT JSON) SELECT m.id FROM {source}"
                                f" WHERE {where} ORDER BY {stamp} DESC, {row} DESC"
                                " LIMIT 26", params).fetchone()
        conn.rollback()
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(found[0]["Plan"])
    return nodes


@pytest.mark.parametrize(("column", "value"), [("topic", f"{fx.PREFIX}.git.push"),
                                               ("category", "git")])
def test_contains_with_a_topic_is_one_intersection_of_the_index(store, column, value):
    """The topic (category) and the term's words are both keys of
    ``messages_body_trgm``: the page reads that index alone, its condition the term's
    words (punctuation kept); the topic alone is served by it too. (Whether the planner
    puts both in one scan depends on the table's size: at a million it does,
    EXPLAIN ANALYZE in ``011_contains_facets.sql``; on this fixture it filters.)"""
    nodes = _plan(store, [("contains", "debian.org"), (column, value)])
    scans = [n for n in nodes if "Index Name" in n]
    assert [n["Index Name"] for n in scans] == ["messages_body_trgm"], nodes
    assert "debianqorg" in scans[0]["Index Cond"], scans[0]
    alone = [n for n in _plan(store, [(column, value)]) if "Index Name" in n]
    assert [n["Index Name"] for n in alone] == ["messages_body_trgm"], alone
    assert f"{column} = " in alone[0]["Index Cond"], alone[0]


def test_words_are_what_the_database_makes_of_a_text(store):
    """``pgstore.words`` (the patterns' side) is ``history_words()`` (the index's) for
    every printable ASCII character and some others, so no pattern misses its index."""
    text = string.printable + "ÄéJÖRG déjà 日本"
    (server,) = store._timed(lambda db: db.execute(
        "SELECT history_words(%s)", (text,)).fetchone())
    assert server == pgstore.words(text) and len(server) == len(text)
    assert pgstore.words("%a\\_b.c%") == "%a\\_bqc%"  # LIKE's own characters stay


def test_the_migration_on_a_stored_history_keeps_its_answers(pg_databases):
    """A history stored under 010 (the body's trigram index alone) answers the same
    after 011 rebuilt the index with the topic and category."""
    url = pg_databases()
    history = PostgresHistory(url)
    history.add_many(record_of(fx.envelope(n, n, TOPICS[n % len(TOPICS)], [], [], body(n)),
                               TypeIndex(())) for n in range(1, 60))
    history.close()
    with psycopg.connect(url, autocommit=True) as conn:  # back to 010's schema
        conn.execute("DROP INDEX messages_body_trgm; DROP FUNCTION history_words(text);"
                     " DELETE FROM history_migrations WHERE version = 11;"
                     " CREATE INDEX messages_body_trgm ON messages USING gin"
                     " (body gin_trgm_ops) WITH (gin_pending_list_limit = 16384)")
    history = PostgresHistory(url)  # 011 again
    try:
        for items in CASES:
            assert_like_brute(history, items)
        with psycopg.connect(url) as conn:
            (definition,) = conn.execute("SELECT indexdef FROM pg_indexes"
                                         " WHERE indexname = 'messages_body_trgm'").fetchone()
        assert "(topic, category, " in definition  # the function schema-qualified or not
        assert "history_words(body) gin_trgm_ops)" in definition
    finally:
        history.close()


def test_the_values_kept_are_bounded(store, monkeypatch):
    """At most ``MAX_KEPT`` values are kept: the loose scan stops one past what the bound
    allows (``LIMIT``), and a query that would keep more is left with its exclusion."""
    items = [("contains", "xyz"), ("not_category", "dak")]  # 3 stored, 2 would be kept
    monkeypatch.setattr(pgstore, "MAX_KEPT", 1)
    assert _kept(store, items) == q.parse(items)
    monkeypatch.setattr(pgstore, "MAX_KEPT", 2)
    kept = _kept(store, items)
    assert kept is not None and kept.categories == ("debbugs", "git")
    (found,) = store._timed(lambda db: db.execute(
        f"SELECT COUNT(*) FROM ({pgstore._STORED_VALUES['topic']}) v", (2,)).fetchone())
    assert found == 2  # four topics stored, two given
