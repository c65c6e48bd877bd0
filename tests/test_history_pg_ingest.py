"""The PostgreSQL batch write path (one set-based statement per batch, rollups counted
per statement by 007's triggers) on the real server: the rollups equal what the row
triggers of 002/003 give, a msg_id is stored once within a batch, across batches and
across concurrent writers, a poison record loses nothing else of its batch, and the
trigram index's pending list (008) is bounded yet searched."""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg
import pytest

from gateway.history import migrate
from gateway.history.pgstore import PostgresHistory
from gateway.history.query import parse
from gateway.history.records import Record, record_of
from gateway.messages import TypeIndex
from tests import history_fixture as fx
from tests import test_history_stats as ts
from tests.test_history_pg import _pg_rollups_match, old_writer

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

#: The migrations before 007: the rollups kept by row triggers.
ROW_TRIGGERS = [m for m in migrate.migrations("postgres") if m.version < 7]


def _rollups(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup row, names for ids (two databases number their names apart)."""
    with psycopg.connect(url) as conn:
        return {
            "activity": sorted(conn.execute("SELECT hour, category, count FROM activity_hourly"
                                            " WHERE count > 0")),
            "topic": sorted(conn.execute("SELECT day, topic, messages FROM stats_topic_days")),
            "user": sorted(conn.execute("SELECT day, name, messages FROM stats_user_days"
                                        " JOIN users ON id = user_id")),
            "package": sorted(conn.execute("SELECT day, name, messages FROM stats_package_days"
                                           " JOIN packages ON id = package_id")),
        }


def _by_row_triggers(url: str, batches: list[list[Record]]) -> None:
    """``batches`` stored as before 007: a statement per message, the row triggers."""
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply_postgres(conn, ROW_TRIGGERS)
    old = old_writer()  # that writer: add(), no migration
    for batch in batches:
        with psycopg.connect(url) as conn:
            for record in batch:
                old.add(conn, record)
        old._names.commit()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_keep_the_rollups_as_the_row_triggers_did(pg_databases, seed):
    rng = random.Random(seed)
    base = ts.W47.start.timestamp()
    batches = []
    for _ in range(4):  # some again, within a batch and across batches
        batch = ts._random_records(rng, rng.randrange(1, 300), base + rng.randrange(0, 10**6))
        batches.append(batch + rng.sample(batch, len(batch) // 5))
        batches.append(rng.sample(batches[-1], len(batches[-1]) // 3))
    rows, batched = pg_databases(), pg_databases()
    _by_row_triggers(rows, batches)
    store = PostgresHistory(batched)
    try:
        added = sum(store.add_many(batch) for batch in batches)
        assert added == len({r.msg_id for batch in batches for r in batch})
        assert _rollups(batched) == _rollups(rows)
        _pg_rollups_match(batched)
        with psycopg.connect(batched) as conn:  # and 007's row triggers for the rest
            conn.execute("DELETE FROM user_messages WHERE message_id % 3 = 0")
            conn.execute("DELETE FROM package_messages WHERE message_id % 3 = 0")
            conn.execute("UPDATE messages SET timestamp = timestamp + 86400 WHERE id % 3 = 1")
            conn.execute("DELETE FROM messages WHERE id % 3 = 0")
        _pg_rollups_match(batched)
    finally:
        store.close()


def test_007_on_a_filled_history_keeps_counting_from_its_rollups(pg_databases):
    url = pg_databases()
    rng = random.Random(7)
    base = ts.W48.start.timestamp()
    _by_row_triggers(url, [ts._random_records(rng, 200, base)])
    store = PostgresHistory(url)  # migrates 007 onto the rows the row triggers counted
    try:
        store.add_many(ts._random_records(rng, 150, base + 3 * 86400))
        _pg_rollups_match(url)
    finally:
        store.close()


def _records(numbers: range, users: tuple[str, ...] = ("alice",)) -> list[Record]:
    return [record_of(fx.envelope(n, n, "git.push", list(users), [f"pkg{n % 4}"],
                                  {"word": f"word{n:04d}x"}), TypeIndex(())) for n in numbers]


def test_a_msg_id_is_stored_once_within_and_across_batches_in_its_first_order(pg_databases):
    url = pg_databases()
    store = PostgresHistory(url)
    one, two, three = _records(range(1, 4))
    try:
        assert store.add_many([two, one, two, one]) == 2
        assert store.add_many([three, one, two, three]) == 1
        assert store.msg_ids() == [fx.msg_id(2), fx.msg_id(1), fx.msg_id(3)]
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT COUNT(*) FROM user_messages").fetchone() == (3,)
            assert conn.execute("SELECT COUNT(*) FROM package_messages").fetchone() == (3,)
            assert conn.execute("SELECT SUM(messages) FROM stats_topic_days"
                                ).fetchone() == (3,)
        _pg_rollups_match(url)
        page = store.search(parse([("package", "pkg2")]))
        assert [(r.msg_id, r.users) for r in page.rows] == [(fx.msg_id(2), ("alice",))]
    finally:
        store.close()


@pytest.mark.parametrize("size", [50, 600])  # 600: each batch in two parts (_add_parts)
def test_concurrent_writers_store_each_message_once_and_count_it_once(pg_databases, size):
    url = pg_databases()
    stores = [PostgresHistory(url), PostgresHistory(url)]
    records = _records(range(1, 901), users=("alice", "bob"))
    # overlapping halves in the bus's order (two recorders of one bus), batches of size
    parts = [records[:600], records[300:]]
    added = [0, 0]
    start = threading.Barrier(2)

    def write(index: int) -> None:
        start.wait()
        part = parts[index]
        for at in range(0, len(part), size):
            added[index] += stores[index].add_many(part[at:at + size])

    threads = [threading.Thread(target=write, args=(i,)) for i in (0, 1)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert sum(added) == len(records)
        assert sorted(stores[0].msg_ids()) == sorted(r.msg_id for r in records)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT COUNT(*) FROM user_messages").fetchone() == (1800,)
        _pg_rollups_match(url)
    finally:
        for store in stores:
            store.close()


def test_a_poison_record_loses_nothing_else_of_its_batch(pg_databases, make_settings):
    from gateway.consumer import Delivery
    from gateway.history.recorder import Recorder

    url = pg_databases()
    store = PostgresHistory(url)
    recorder = Recorder(make_settings(), store, index=TypeIndex(()), endpoints=[])
    envelopes = [fx.envelope(n, n, "git.push", ["alice"], ["newpkg"], {}) for n in range(1, 41)]
    envelopes[17] = dict(envelopes[17], msg={"note": "nul \x00 here"})  # PostgreSQL refuses it
    try:
        for envelope in envelopes:
            recorder.handle(Delivery(envelope, batched=True))
        recorder.flush()
        stored = [e["msg_id"] for i, e in enumerate(envelopes) if i != 17]
        assert store.msg_ids() == stored
        assert (recorder.stored, recorder.known) == (39, 1)
        _pg_rollups_match(url)
    finally:
        store.close()


def test_the_trigram_pending_list_is_bounded_and_searched(pg_databases):
    url = pg_databases(database=True)
    store = PostgresHistory(url, clean_pending=False)  # no merge beside the writes
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            (options,) = conn.execute("SELECT reloptions FROM pg_class"
                                      " WHERE relname = 'messages_body_trgm'").fetchone()
            assert "gin_pending_list_limit=16384" in options
            conn.execute("CREATE EXTENSION pgstattuple")
        store.add_many(_records(range(1, 30)))
        with psycopg.connect(url) as conn:
            (pending,) = conn.execute("SELECT pending_tuples FROM"
                                      " pgstatginindex('messages_body_trgm')").fetchone()
        assert pending > 0  # not merged yet: a search must read the list too
        page = store.search(parse([("contains", "word0007x")]))
        assert [r.msg_id for r in page.rows] == [fx.msg_id(7)]
    finally:
        store.close()


def test_a_batch_takes_whole_second_times_among_fractional_ones(pg_databases):
    import dataclasses

    store = PostgresHistory(pg_databases())
    one, two = _records(range(1, 3))
    try:  # a Record built elsewhere may carry an int: one binary array takes one type
        assert store.add_many([dataclasses.replace(one, timestamp=int(one.timestamp)),
                               dataclasses.replace(two, timestamp=two.timestamp + 0.5)]) == 2
        assert [r.timestamp for r in store.search(parse([])).rows] == \
            [two.timestamp + 0.5, one.timestamp]
    finally:
        store.close()
