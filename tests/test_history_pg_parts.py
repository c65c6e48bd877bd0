"""The PostgreSQL write path on two backends (issue 14), on the real server: a large batch
is written in parts (concurrent transactions) that keep the batch's id and feed order; a
part that fails leaves the others, and the batch written again doubles nothing; a kill -9
between the parts' commits loses and doubles nothing; the trigram pending list is merged
beside the writes (and still searched)."""

from __future__ import annotations

import signal
import subprocess
import time

import psycopg
import pytest

from gateway.history.pgstore import MIN_PART, PostgresHistory
from gateway.history.query import parse
from gateway.history.store import Position
from gateway.messages import TypeIndex
from tests import history_fixture as fx
from tests.conftest import BUSGATE, REPO
from tests.test_history_pg import _pg_rollups_match, history
from tests.test_history_pg_ingest import _records
from tests.test_history_recorder import lines, outbox, publish, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


def _rows(url: str) -> list[tuple[str, int]]:
    """(msg_id, xid) of every message in id order."""
    with psycopg.connect(url) as conn:
        return [(m, int(x)) for m, x in conn.execute(
            "SELECT msg_id, xid::text FROM messages ORDER BY id")]


def test_a_large_batch_is_written_in_two_transactions_in_its_order(pg_databases):
    url = pg_databases()
    store = PostgresHistory(url)
    records = _records(range(1, 4 * MIN_PART + 1), users=("alice", "bob"))
    try:
        assert store.add_many(records) == len(records)
        rows = _rows(url)
        assert [m for m, _ in rows] == [r.msg_id for r in records]  # ids: the batch's order
        xids = [x for _, x in rows]
        assert len(set(xids)) == 2 and xids == sorted(xids)  # two parts, in order
        feed = store.since(Position(0, 0), 10 * len(records))
        assert [s.msg_id for _, s in feed] == [r.msg_id for r in records]
        assert store.add_many(records) == 0  # again: nothing doubled
        small = _records(range(5000, 5000 + 2 * MIN_PART - 1))  # under two parts: one
        assert store.add_many(small) == len(small)
        assert len({x for _, x in _rows(url)[len(records):]}) == 1
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT COUNT(*) FROM user_messages").fetchone() == (
                2 * len(records) + len(small),)
        _pg_rollups_match(url)
        page = store.search(parse([("contains", "word0007x")]))
        assert [r.msg_id for r in page.rows] == [fx.msg_id(7)]
    finally:
        store.close()


def test_write_parts_splits_a_batch_in_that_many_transactions_in_its_order(
        pg_databases, make_settings):
    """``history.write_parts`` = 3 (through the settings, as the recorder opens its
    store): three transactions of a batch of 3 * MIN_PART, ids and the feed in the
    batch's order; a batch too small for three parts of MIN_PART is written in fewer."""
    from gateway.history.backends import open_history

    url = pg_databases()
    store = open_history(make_settings(history={"database": url, "write_parts": 3}))
    assert isinstance(store, PostgresHistory) and store.write_parts == 3
    records = _records(range(1, 3 * MIN_PART + 1), users=("alice",))
    smaller = _records(range(5000, 5000 + 3 * MIN_PART - 1))
    try:
        assert store.add_many(records) == len(records)
        rows = _rows(url)
        assert [m for m, _ in rows] == [r.msg_id for r in records]
        xids = [x for _, x in rows]
        assert len(set(xids)) == 3 and xids == sorted(xids)
        feed = store.since(Position(0, 0), 10 * len(records))
        assert [s.msg_id for _, s in feed] == [r.msg_id for r in records]
        assert store.add_many(smaller) == len(smaller)  # two parts of >= MIN_PART
        assert len({x for _, x in _rows(url)[len(records):]}) == 2
        _pg_rollups_match(url)
    finally:
        store.close()


def test_a_part_that_fails_leaves_the_others_and_the_batch_again_doubles_nothing(
        pg_databases, make_settings):
    from gateway.consumer import Delivery
    from gateway.history.recorder import Recorder

    url = pg_databases()
    store = PostgresHistory(url)
    records = _records(range(1, 4 * MIN_PART + 1))
    poison = records[3 * MIN_PART].msg_id  # in the second part
    try:
        with psycopg.connect(url) as conn:
            conn.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " RAISE EXCEPTION 'refused'; END $$;"
                "CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW"
                f" WHEN (NEW.msg_id = '{poison}') EXECUTE FUNCTION refuse()")
        with pytest.raises(psycopg.Error, match="refused"):
            store.add_many(records)
        half = [r.msg_id for r in records[:2 * MIN_PART]]
        assert store.msg_ids() == half  # the first part committed, the second did not
        # the recorder's batch again (as after a restart): the rest once, the poison left
        recorder = Recorder(make_settings(), store, index=TypeIndex(()), endpoints=[])
        for number in range(1, 4 * MIN_PART + 1):
            recorder.handle(Delivery(fx.envelope(number, number, "git.push", ["alice"],
                                                 [f"pkg{number % 4}"],
                                                 {"word": f"word{number:04d}x"}),
                                     batched=True))
        recorder.flush()
        assert store.msg_ids() == [r.msg_id for r in records if r.msg_id != poison]
        assert recorder.stored == 2 * MIN_PART - 1
        _pg_rollups_match(url)
    finally:
        store.close()


def test_kill9_between_the_parts_commits_loses_and_doubles_nothing(daemon, pg_databases):
    proc, settings = daemon()
    url = pg_databases()
    publish(proc.env, lines("live", 4 * MIN_PART))
    wait_for(lambda: len(outbox(settings)) == 4 * MIN_PART)
    want = outbox(settings)
    PostgresHistory(url).close()  # the schema; then the second part stalls in the server
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " PERFORM pg_sleep(3); RETURN NEW; END $$;"
            "CREATE TRIGGER stall BEFORE INSERT ON messages FOR EACH ROW"
            f" WHEN (NEW.msg_id = '{want[3 * MIN_PART]}') EXECUTE FUNCTION stall()")
    backfill = subprocess.Popen([*BUSGATE, "record", "--backfill", "--database", url],
                                env=proc.env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(history(url)) == 2 * MIN_PART, 20)
    finally:
        backfill.kill()  # the first part committed, the second not, the position not
    assert backfill.wait(10) == -signal.SIGKILL
    assert history(url) == want[:2 * MIN_PART]
    with psycopg.connect(url) as conn:  # waits for the stalled part to end (rolled back)
        conn.execute("DROP TRIGGER stall ON messages")
    time.sleep(0.2)
    assert history(url) == want[:2 * MIN_PART]
    done = subprocess.run([*BUSGATE, "record", "--backfill", "--database", url],
                          env=proc.env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"backfilled {2 * MIN_PART} new of {4 * MIN_PART}" in done.stdout
    assert history(url) == want  # all of them, once each, in order
    _pg_rollups_match(url)


def test_the_pending_list_is_merged_beside_the_writes_and_searched(pg_databases):
    url = pg_databases(database=True)
    store = PostgresHistory(url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pgstattuple")
        store.add_many(_records(range(1, 30)))

        def pending() -> int:
            with psycopg.connect(url) as conn:
                return int(conn.execute("SELECT pending_tuples FROM"
                                        " pgstatginindex('messages_body_trgm')").fetchone()[0])

        wait_for(lambda: pending() == 0, 10)
        assert pending() == 0  # merged by the cleaner, not by an insert past the limit
        page = store.search(parse([("contains", "word0007x")]))
        assert [r.msg_id for r in page.rows] == [fx.msg_id(7)]
    finally:
        store.close()
