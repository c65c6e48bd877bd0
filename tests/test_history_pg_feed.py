"""The live feed on PostgreSQL with two writers (``006_feed_order.sql``): ids come from a
sequence at insert, so two transactions commit out of id order; the feed, read in
(xid, id) order below the oldest running writer of messages, must still hand out every
row once, through ``HistoryStore.since`` and through a real ``/v2/stream``, resume included."""

from __future__ import annotations

import json
import queue
import time

import pytest

from gateway.history.pgstore import PostgresHistory
from gateway.history.records import record_of
from gateway.history.store import Position
from tests import dashboard_helpers as dh
from tests.test_dashboard import BUG, DAK, NOW, settled, stream

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


def message(number: int) -> object:
    """A record that shares no rollup row with the other one: two open transactions
    counting the same (hour, service), (day, topic) or name would make the second wait
    for the first (which commits in order anyway, and in one thread would deadlock)."""
    topic = DAK if number % 2 else BUG
    return record_of(dh.envelope(number, topic, {"source": f"p{number}", "bug": number,
                                                 "package": f"p{number}", "version": "1"},
                                 NOW, packages=(f"p{number}",)), dh.index())


def test_a_row_committing_late_behind_a_higher_id_is_still_fed_once(pg_databases):
    url = pg_databases()
    late, early, reader = PostgresHistory(url), PostgresHistory(url), PostgresHistory(url)
    try:
        start = reader.last_position()
        with late.transaction() as slow:
            late.add(slow, message(1))  # id 1, its transaction still open
            with early.transaction() as fast:
                early.add(fast, message(2))  # id 2, committed first
            with reader._pool.connection() as conn:  # what "id > last id sent" would see
                assert [r[0] for r in conn.execute("SELECT id FROM messages")] == [2]
            assert reader.since(start, 10) == []  # held back, not skipped past 1
            assert reader.last_position() == start
        rows = settled(reader, start, 10, 2)
        assert [row.id for _, row in rows] == [1, 2]
        assert rows[0][0] < rows[1][0] and reader.last_position() == rows[1][0]
        assert reader.since(rows[1][0], 10) == []
        assert reader.position_of(2) == rows[1][0]
    finally:
        for store in (late, early, reader):
            store.close()


def test_the_stream_delivers_both_once_and_resumes_by_position(pg_databases):
    url = pg_databases()
    late, early, served = PostgresHistory(url), PostgresHistory(url), PostgresHistory(url)
    try:
        with dh.serve(served) as base, stream(base + "/v2/stream") as live:
            with late.transaction() as slow:
                late.add(slow, message(1))
                with early.transaction() as fast:
                    early.add(fast, message(2))
                time.sleep(1.0)  # ten polls: message 2 is committed, yet must wait for 1
                with pytest.raises(queue.Empty):
                    live.next(timeout=0.1)
            frames = [live.next() for _ in range(2)]
            assert [json.loads(f["data"])["id"] for f in frames] == [1, 2]
            with pytest.raises(queue.Empty):  # each once
                live.next(timeout=1.0)
            tokens = [f["id"] for f in frames]
            assert all(isinstance(Position.parse(t), Position) for t in tokens)
            with stream(base + "/v2/stream", {"Last-Event-ID": tokens[0]}) as resumed:
                assert resumed.ids(1) == [2]
                with pytest.raises(queue.Empty):
                    resumed.next(timeout=0.5)
            # a plain message id (a page from before positions) resumes from its row
            with stream(base + "/v2/stream", {"Last-Event-ID": "1"}) as old:
                assert old.ids(1) == [2]
            with stream(base + "/v2/stream", {"Last-Event-ID": "99"}) as gone:
                assert gone.next() == {"event": "gap", "data": "{}"}
    finally:
        for store in (late, early, served):
            store.close()


def test_the_feed_orders_transaction_ids_as_numbers(pg_databases):
    """xid 9 comes before xid 10 (a text sort would put "10" first, and the index would
    not serve it): rows given old, long-ended transaction ids by hand."""
    url = pg_databases()
    store = PostgresHistory(url)
    try:
        dh.add(store, *(dh.envelope(n, BUG, {"bug": n}, NOW) for n in (1, 2, 3)))
        with store.transaction() as db:
            for row_id, xid in ((1, "10"), (2, "9"), (3, "100")):
                db.execute("UPDATE messages SET xid = %s::xid8 WHERE id = %s", (xid, row_id))
        rows = settled(store, Position(0, 0), 10, 3)
        assert [(at.xid, row.id) for at, row in rows] == [(9, 2), (10, 1), (100, 3)]
        assert store.last_position() == Position(100, 3)
        assert [row.id for _, row in store.since(Position(9, 2), 10)] == [1, 3]
    finally:
        store.close()


def test_a_write_left_open_elsewhere_on_the_server_holds_nothing_back(pg_databases):
    """A transaction holding a transaction id on another table of the same database, and
    one in another database, both open across the reads: the feed (and its head) still
    moves on, because neither holds a write lock on this history's messages."""
    import psycopg

    url = pg_databases()
    store = PostgresHistory(url)
    other_db = pg_databases(database=True)
    try:
        with psycopg.connect(url) as here, \
                psycopg.connect(other_db) as there:
            here.execute("CREATE TABLE IF NOT EXISTS unrelated (n int)")
            here.commit()
            here.execute("INSERT INTO unrelated VALUES (1)")  # holds an xid, left open
            there.execute("CREATE TABLE elsewhere (n int)")  # holds an xid, left open
            assert here.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()[0]
            assert there.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()[0]
            start = store.last_position()
            dh.add(store, dh.envelope(1, BUG, {"bug": 1}, NOW))
            rows = store.since(start, 10)  # no wait: nothing to settle
            assert [row.id for _, row in rows] == [1]
            assert store.last_position() == rows[0][0]
            here.rollback()
            there.rollback()
    finally:
        store.close()
