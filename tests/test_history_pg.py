"""The PostgreSQL history on the real server: the recorder's kill -9 between its two
commits (PostgreSQL, then the local position) loses and doubles nothing; migrations
(advisory lock, newer schema refused, pg_trgm missing said so); the connection bound;
backend choice. The shared /raw semantics run in tests/test_history_web.py."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from fixtures.wannabuild import wbdb
from gateway.history import backends, migrate
from gateway.history.pgstore import NameIds, PostgresHistory, like_pattern
from gateway.history.records import record_of
from gateway.history.store import HistoryError, QueryTimeout, SqliteHistory
from gateway.messages import TypeIndex
from tests import history_fixture as fx
from tests.conftest import BUSGATE, REPO, free_port
from tests.test_history_recorder import lines, outbox, publish, start_recorder, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


#: A busgate before 009's single-message statement (links without their message's
#: category): what an old writer stored, for the tests that migrate its database forward.
OLD_ADD = ("WITH m AS (INSERT INTO messages (msg_id, topic, category, timestamp, publisher,"
           " seq_id, envelope, body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
           " ON CONFLICT (msg_id) DO NOTHING RETURNING id, timestamp),"
           " u AS (INSERT INTO user_messages (user_id, timestamp, message_id)"
           " SELECT unnest(%s::bigint[]), m.timestamp, m.id FROM m ON CONFLICT DO NOTHING),"
           " p AS (INSERT INTO package_messages (package_id, timestamp, message_id)"
           " SELECT unnest(%s::bigint[]), m.timestamp, m.id FROM m ON CONFLICT DO NOTHING)"
           " SELECT COUNT(*) FROM m")


def old_writer() -> PostgresHistory:
    """A store that writes with :data:`OLD_ADD` (``add``), never migrating."""
    old = PostgresHistory.__new__(PostgresHistory)
    old._names = NameIds()
    old.add = lambda db, record: bool(db.execute(  # type: ignore[method-assign]
        OLD_ADD, old._params(db, record)).fetchone()[0])
    return old


def history(url: str) -> list[str]:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return [r[0] for r in conn.execute("SELECT msg_id FROM messages ORDER BY id")]
    except psycopg.errors.UndefinedTable:  # not migrated yet
        return []


def position(settings) -> int:  # type: ignore[no-untyped-def]
    with sqlite3.connect(settings.state_dir / backends.POSITION_FILE) as db:
        (seq,) = db.execute("SELECT seq_id FROM position").fetchone()
    return seq


def test_kill9_between_the_two_commits_loses_and_doubles_nothing(daemon, pg_databases):
    proc, settings = daemon()
    config = settings.loaded_from[0]
    url = pg_databases()
    publish(proc.env, lines("before", 50))
    wait_for(lambda: len(outbox(settings)) == 50)
    done = subprocess.run([*BUSGATE, "record", "--backfill", "--database", url],
                          env=proc.env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "backfilled 50 new of 50" in done.stdout
    assert history(url) == outbox(settings) and position(settings) == 50

    # kills itself right after PostgreSQL committed the batch holding its 150th message,
    # before the position moved past it: the worst moment of the two-commit scheme
    recorder = start_recorder(proc.env, config, url, "0", "150")
    publish(proc.env, lines("live", 400))
    assert recorder.wait(60) == -signal.SIGKILL
    stored = history(url)
    assert len(stored) >= 200  # the batch with the 150th is in PostgreSQL...
    assert stored == outbox(settings)[:len(stored)]  # (in order, none doubled)
    assert 50 <= position(settings) < len(stored)  # ...and the position is before it
    publish(proc.env, lines("down", 150))  # while the recorder is dead
    recorder = start_recorder(proc.env, config, url, "0")
    try:
        wait_for(lambda: len(history(url)) == 600)
        proc.stop()  # the publisher restarts; the recorder stays
        publish(proc.env, lines("offline", 50))  # spooled while the daemon is down
        proc.start()
        publish(proc.env, lines("after", 50))
        wait_for(lambda: len(outbox(settings)) == 700)
        want = outbox(settings)
        assert len(want) == 700
        wait_for(lambda: len(history(url)) >= len(want))
        wait_for(lambda: position(settings) == len(want), 10)
        time.sleep(0.3)  # anything doubled or late would come now
        got = history(url)
    finally:
        recorder.kill()
        recorder.wait(10)
    assert got == want  # all of them, once each, in outbox order
    assert position(settings) == len(want)


def test_recorder_stops_before_the_position_when_postgresql_is_gone(pg_databases,
                                                                    make_settings):
    from gateway.consumer import NotHandled
    from gateway.history.recorder import Recorder

    url = pg_databases(database=True)
    store = PostgresHistory(url, query_timeout=1.0, write_wait=1.0)
    recorder = Recorder(make_settings(), store, index=TypeIndex(()), endpoints=[])
    name = url.rsplit("/", 1)[1]
    with wbdb.admin() as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
            sql.Identifier(name)))
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE datname = %s", (name,))
    try:
        from gateway.consumer import Delivery

        with pytest.raises(NotHandled, match="history database"):
            recorder.handle(Delivery(fx.envelope(*fx.MESSAGES[0])))
    finally:
        with wbdb.admin() as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                sql.Identifier(name)))
    store.write_wait = 30.0  # the pool reconnects with a back-off: let it
    recorder.handle(Delivery(fx.envelope(*fx.MESSAGES[0])))  # back: stored
    assert store.msg_ids() == [fx.msg_id(1)] and recorder.stored == 1
    store.close()


def test_the_pool_bounds_connections_and_a_wait_past_the_limit_is_a_timeout(pg_databases):
    url = pg_databases(database=True)
    store = PostgresHistory(url, query_timeout=0.5, pool_size=2)
    release = threading.Event()
    holding = threading.Barrier(3)

    def hold(db: Any) -> None:
        holding.wait(10)
        release.wait(10)

    threads = [threading.Thread(target=store._timed, args=(hold,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    holding.wait(10)  # both connections are taken
    try:
        started = time.monotonic()
        with pytest.raises(QueryTimeout, match="pool_size"):
            store.count()
        assert time.monotonic() - started < 5
        with wbdb.admin() as admin:
            (open_,) = admin.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = %s",
                                     (url.rsplit("/", 1)[1],)).fetchone()
        assert open_ <= 2
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert store.count() == 0  # free again
    store.close()


def test_the_server_cancels_a_query_past_its_time_limit(pg_databases):
    url = pg_databases()
    store = PostgresHistory(url, query_timeout=0.2)
    with pytest.raises(QueryTimeout, match="ran past"):
        store._timed(lambda db: db.execute("SELECT pg_sleep(60)"))
    with wbdb.admin() as admin:
        running = admin.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE"
                                " 'SELECT pg_sleep(60)%%' AND state = 'active'").fetchone()
    assert running == (0,)  # cancelled on the server, not merely abandoned
    assert store.count() == 0
    store.close()


def test_contains_takes_like_characters_literally_and_ignores_case(pg_databases):
    store = fx.fill(PostgresHistory(pg_databases()))
    extra = fx.envelope(7, 6, "git.push", [], [], {"path": "C:\\tmp\\x", "note": "a_b%c"})
    store.add_many([record_of(extra, TypeIndex(()))])
    from gateway.history import query as q

    def found(term: str) -> list[str]:
        return [r.msg_id[-1] for r in store.search(q.parse([("contains", term)])).rows]

    assert found("\\tmp\\") == ["7"] and found("a_b%") == ["7"]
    assert found("a%c") == [] and found("done_o") == ["5"] and found("DONE_OK") == ["5"]
    assert found("JÖRG") == ["3"] and found("DÉJÀ") == ["2"]
    assert like_pattern("5%_\\") == "%5\\%\\_\\\\%"
    store.close()


def test_migrations_hold_a_lock_so_two_processes_open_at_once(pg_databases):
    url = pg_databases()
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def open_close() -> None:
        try:
            start.wait(10)
            PostgresHistory(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_close) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, name FROM history_migrations ORDER BY 1").fetchall()
    assert rows == [(m.version, m.name) for m in migrate.migrations("postgres")]


def test_migrations_refuse_a_newer_database_and_an_absent_one(pg_databases):
    url = pg_databases()
    with pytest.raises(HistoryError, match=r"no history in .*run busgate record"):
        PostgresHistory(url, create=False)
    PostgresHistory(url).close()
    PostgresHistory(url, create=False).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO history_migrations VALUES (99, '099_future.sql', 0)")
    with pytest.raises(HistoryError, match="newer than this busgate"):
        PostgresHistory(url)


def test_a_missing_pg_trgm_is_named_with_the_fix(pg_databases):
    url = pg_databases(database=True)
    name = url.rsplit("/", 1)[1]
    role = f"{name}_ro"
    wbdb.create_role(role, dbname=name)
    with psycopg.connect(wbdb.dsn(name), autocommit=True) as conn:  # tables, not extensions
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        with pytest.raises(HistoryError) as caught:
            PostgresHistory(f"postgresql://{role}@{wbdb.HOST}:{wbdb.PORT}/{name}")
    finally:
        wbdb.drop_role(role, dbnames=(name,))
    text = str(caught.value)
    assert "001_initial.sql" in text and 'extension "pg_trgm"' in text
    assert "postgresql-contrib" in text and "CREATE EXTENSION pg_trgm" in text


def test_open_history_picks_the_backend_and_never_shows_a_password(pg_databases, tmp_path,
                                                                   make_settings):
    url = pg_databases().replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    store = backends.open_history_url(url, 2.0, pool_size=1)
    assert isinstance(store, PostgresHistory) and store.position_path is None
    assert "s3cret" not in store.where
    assert store.where == f"{wbdb.HOST}:{wbdb.PORT}/{url.split('/')[3].split('?')[0]}"
    store.close()
    lite = backends.open_history_url(str(tmp_path / "h.sqlite"), 2.0)
    assert isinstance(lite, SqliteHistory) and lite.position_path == tmp_path / "h.sqlite"
    lite.close()
    settings = make_settings(history={"database": url, "pool_size": 1})
    store = backends.open_history(settings)
    assert backends.position_path(settings, store) == \
        settings.state_dir / "history-position.sqlite"
    store.close()
    moved = make_settings(history={"database": url, "position": str(tmp_path / "p.sqlite")})
    store = backends.open_history(moved)
    assert backends.position_path(moved, store) == tmp_path / "p.sqlite"
    store.close()


def test_an_unreachable_postgresql_is_a_clear_error(make_settings):
    settings = make_settings()
    url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/nowhere"
    for command in ("record", "web"):
        done = subprocess.run([*BUSGATE, "--config", settings.loaded_from[0], command,
                               "--database", url], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
        assert done.returncode == 73, done.stderr
        assert "cannot open the history database 127.0.0.1:" in done.stderr
        assert "Traceback" not in done.stderr and "s3cret" not in done.stderr


# -- the rollups (002 activity, 003 stats) on PostgreSQL ------------------------------------
def test_weekly_overview_is_the_same_on_both_backends(pg_databases, tmp_path):
    from gateway.history import stats
    from tests import test_history_stats as ts

    records = [record_of(env, TypeIndex(())) for env in ts.envelopes()]
    lite = SqliteHistory(tmp_path / "h.sqlite")
    pg = PostgresHistory(pg_databases())
    for store in (lite, pg):
        store.add_many(records)
    reader = PostgresHistory(pg.url, readonly=True)
    try:
        for week in (ts.W47, ts.W48, stats.Week(2026, 49)):
            want, got = stats.overview(lite, week), stats.overview(reader, week)
            assert ts.kinds(got) == ts.kinds(want)
            assert (got.packages, got.users) == (want.packages, want.users)
        assert ts.kinds(stats.overview(reader, ts.W48))["uploads"] == (3, 1, 2)
        monday = ts.W48.start.timestamp()
        for start, end in ((monday - 1, monday), (monday, monday + 1), (monday - 5e5, monday)):
            assert reader.topic_counts(start, end) == lite.topic_counts(start, end)
        with pytest.raises(ValueError, match="at most 400 days"):
            reader.topic_counts(monday, monday + 401 * 86400)
        with pytest.raises(ValueError, match=r"limit must be 1\.\.1000"):
            reader.top_names("users", monday, monday + 86400, 0)
    finally:
        for store in (lite, pg, reader):
            store.close()


def _pg_rollups_match(url: str) -> None:
    day = "floor(timestamp / 86400)::bigint"
    with psycopg.connect(url) as conn:
        for direct, rolled in (
                (f"SELECT {day}, topic, COUNT(*) FROM messages GROUP BY 1, 2",
                 "SELECT day, topic, messages FROM stats_topic_days"),
                (f"SELECT {day}, user_id, COUNT(*) FROM user_messages GROUP BY 1, 2",
                 "SELECT day, user_id, messages FROM stats_user_days"),
                (f"SELECT {day}, package_id, COUNT(*) FROM package_messages GROUP BY 1, 2",
                 "SELECT day, package_id, messages FROM stats_package_days"),
                ("SELECT floor(timestamp / 3600)::bigint, category, COUNT(*) FROM messages"
                 " GROUP BY 1, 2", "SELECT hour, category, count FROM activity_hourly"
                                   " WHERE count > 0")):
            assert set(conn.execute(direct)) == set(conn.execute(rolled)), rolled


def test_rollups_equal_direct_counts_after_inserts_updates_and_deletes(pg_databases):
    import random

    from tests import test_history_stats as ts

    rng = random.Random(5)
    url = pg_databases()
    store = PostgresHistory(url)
    base = ts.W47.start.timestamp()
    for _ in range(3):  # several batches, then the same again (stored once: counted once)
        batch = ts._random_records(rng, 150, base + rng.randrange(0, 10**6))
        store.add_many(batch)
        store.add_many(batch[:20])
    _pg_rollups_match(url)
    with psycopg.connect(url) as conn:
        for _ in range(10):
            start = base + rng.uniform(-86400, 12 * 10**5)
            end = start + rng.choice([0, 1, 86400, 7 * 86400, rng.uniform(0, 30 * 86400)])
            assert store.topic_counts(start, end) == dict(conn.execute(
                "SELECT topic, COUNT(*) FROM messages WHERE timestamp >= %s"
                " AND timestamp < %s GROUP BY topic", (start, end)).fetchall())
            assert store.top_names("users", start, end, 3) == [tuple(r) for r in conn.execute(
                "SELECT t.name, COUNT(*) AS c FROM user_messages l JOIN users t"
                " ON t.id = l.user_id WHERE l.timestamp >= %s AND l.timestamp < %s"
                ' GROUP BY t.name ORDER BY c DESC, t.name COLLATE "C" LIMIT 3', (start, end))]
        doomed = "SELECT id FROM messages WHERE id % 3 = 0"  # what a retention would do
        conn.execute(f"DELETE FROM user_messages WHERE message_id IN ({doomed})")
        conn.execute(f"DELETE FROM package_messages WHERE message_id IN ({doomed})")
        conn.execute("UPDATE messages SET timestamp = timestamp + 86400 WHERE id % 3 = 1")
        conn.execute(f"DELETE FROM messages WHERE id IN ({doomed})")
    _pg_rollups_match(url)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM stats_topic_days WHERE messages <= 0"
                            ).fetchone() == (0,)
    store.close()


def test_the_rollup_migrations_fill_rows_stored_before_them(pg_databases):
    import random

    from tests import test_history_stats as ts

    url = pg_databases()
    with psycopg.connect(url, autocommit=True) as conn:  # a busgate that had only 001
        migrate.apply_postgres(conn, migrate.migrations("postgres")[:1])
    old = old_writer()  # v1 writer: add() without migrating
    records = ts._random_records(random.Random(9), 200, ts.W47.start.timestamp())
    with psycopg.connect(url) as conn:
        for record in records:
            old.add(conn, record)
    with pytest.raises(HistoryError, match=r"lacks 002_activity\.sql, 003_stats\.sql"):
        PostgresHistory(url, readonly=True)
    store = PostgresHistory(url)  # migrates: 002 and 003 fill their rollups
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT SUM(messages) FROM stats_topic_days").fetchone() == (200,)
        for link in ("user_messages", "package_messages"):  # 009 gave each its category
            links, same = conn.execute(f"SELECT COUNT(*), COUNT(*) FILTER (WHERE l.category"
                                       f" = m.category) FROM {link} l JOIN messages m"
                                       " ON m.id = l.message_id").fetchone()
            assert links == same > 0, link
    _pg_rollups_match(url)
    store.add_many(ts._random_records(random.Random(10), 50, ts.W48.start.timestamp()))
    _pg_rollups_match(url)  # and the triggers keep them from then on
    store.close()


def test_a_count_past_count_limit_is_capped_and_says_so(pg_databases):
    from gateway.history import query as q

    url = pg_databases()
    fx.fill(PostgresHistory(url)).close()
    for limit, want in ((3, (3, True)), (6, (6, False))):
        store = PostgresHistory(url, count_limit=limit)
        page = store.search(q.parse([]))
        assert (page.total, page.capped) == want and len(page.rows) == 6
        store.close()


def _many(url: str, n: int) -> None:
    """``n`` more messages (copies of the fixture's first, one second apart, newest last):
    every body has "needle", every 3rd "midneedle" too, and filler words (a count of
    thousands of such rows takes milliseconds however fast the machine)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO messages (msg_id, topic, category, timestamp, publisher, seq_id,"
            " envelope, body) SELECT msg_id || '-' || g, topic, category, timestamp + g,"
            " publisher, seq_id + g, envelope, body || ' needle'"
            " || CASE WHEN g %% 3 = 0 THEN ' midneedle' ELSE '' END || repeat(' filler', 60)"
            " FROM messages, generate_series(1, %s) g WHERE id = (SELECT MIN(id) FROM messages)",
            (n,))


def test_a_count_past_its_budget_answers_the_lower_bound_its_page_proves(pg_databases):
    from gateway.history import query as q

    url = pg_databases()
    fx.fill(PostgresHistory(url)).close()
    _many(url, 5000)
    budget = PostgresHistory(url, count_budget_ms=1)  # no count of 5,000 rows is that fast
    unbounded = PostgresHistory(url, count_budget_ms=0)
    try:
        for page, want in ((1, 11), (3, 31)):
            asked = q.parse([("contains", "needle"), ("rows_per_page", "10"),
                             ("page", str(page))])
            cut, full = budget.search(asked), unbounded.search(asked)
            assert (cut.total, cut.capped) == (want, True)  # rows up to here, and a next
            assert (full.total, full.capped) == (5000, False)
            assert [r.msg_id for r in cut.rows] == [r.msg_id for r in full.rows]
            assert len(cut.rows) == 10
        # the page holding the last match knows the total without counting: exact
        last = budget.search(q.parse([("contains", "needle"), ("rows_per_page", "100"),
                                      ("order", "asc"), ("start", str(fx.T0 + 4951))]))
        assert (last.total, last.capped, len(last.rows)) == (50, False, 50)
        ended = budget.search(q.parse([("contains", "needle"), ("rows_per_page", "30"),
                                       ("page", "2"), ("start", str(fx.T0 + 4951))]))
        assert (ended.total, ended.capped, len(ended.rows)) == (50, False, 20)
    finally:
        budget.close()
        unbounded.close()


def test_clients_paging_by_pages_or_cursor_get_every_row_past_the_budget(pg_databases):
    """datagrepper scripts loop while page <= pages (or follow the cursor): each cut
    answer promises one page more while there is one, so both ways reach every row."""
    import httpx

    url = pg_databases()
    fx.fill(PostgresHistory(url)).close()
    _many(url, 5000)
    with psycopg.connect(url) as conn:
        want = [r[0] for r in conn.execute("SELECT msg_id FROM messages WHERE body ILIKE"
                                           " '%MIDneedle%' ORDER BY timestamp DESC, id DESC")]
    assert len(want) == 1666
    store = PostgresHistory(url, count_budget_ms=1)
    try:
        with fx.serve(store) as base, httpx.Client(base_url=base, timeout=30) as client:
            by_page, page, capped = [], 1, 0
            while True:
                got = client.get("/raw", params={"contains": "MIDneedle", "page": page,
                                                 "rows_per_page": 100}).json()
                by_page += [m["msg_id"] for m in got["raw_messages"]]
                capped += got["total_capped"]
                if page >= got["pages"]:
                    break
                page += 1
            assert by_page == want
            assert capped and got["total"] == len(want) and not got["total_capped"]
            for size in (100, 98):  # 1666 = 17 * 98: no cursor past the last full page
                by_cursor, params = [], {"contains": "MIDneedle", "rows_per_page": size}
                while True:
                    got = client.get("/raw", params=params).json()
                    assert got["raw_messages"]
                    by_cursor += [m["msg_id"] for m in got["raw_messages"]]
                    if not got["cursor"]:
                        break
                    params["cursor"] = got["cursor"]
                assert by_cursor == want
    finally:
        store.close()


def test_busgate_run_records_into_postgresql_when_history_is_enabled(daemon, pg_databases):
    url = pg_databases()
    proc, settings = daemon(history={"enabled": True, "database": url})
    # the recorder follows new publishers from when it subscribes (the past is backfill's),
    # and it subscribes right after making its position file: wait for that file
    wait_for((settings.state_dir / backends.POSITION_FILE).exists)
    publish(proc.env, lines("inside", 50))
    wait_for(lambda: len(outbox(settings)) == 50)
    wait_for(lambda: len(history(url)) == 50, 20)
    assert history(url) == outbox(settings)
    wait_for(lambda: position(settings) == 50, 10)
    assert proc.stop() == 0  # the recorder thread stops with the daemon


def test_a_rolled_back_name_is_not_remembered(pg_databases):
    from gateway.history import query as q

    store = PostgresHistory(pg_databases())
    first = record_of(fx.envelope(1, 0, "git.push", ["newbie"], ["newpkg"], {}), TypeIndex(()))
    again = record_of(fx.envelope(2, 1, "git.push", ["newbie"], ["newpkg"], {}), TypeIndex(()))
    with pytest.raises(RuntimeError), store.transaction() as db:
        assert store.add(db, first) is True
        raise RuntimeError("rolled back, with the names it created")
    assert store.add_many([again, first, again]) == 2  # the ids are looked up again
    page = store.search(q.parse([("user", "newbie"), ("package", "newpkg")]))
    assert [r.msg_id for r in page.rows] == [fx.msg_id(2), fx.msg_id(1)]
    assert page.rows[0].users == ("newbie",) and page.rows[0].packages == ("newpkg",)
    store.close()


def test_a_batch_commits_in_postgresql_at_flush_and_waits_when_it_is_gone(pg_databases,
                                                                          make_settings):
    from gateway.consumer import Delivery, NotHandled
    from gateway.history.recorder import Recorder

    url = pg_databases(database=True)
    store = PostgresHistory(url, query_timeout=1.0, write_wait=1.0)
    recorder = Recorder(make_settings(), store, index=TypeIndex(()), endpoints=[])
    first, second, third = (fx.envelope(*m) for m in fx.MESSAGES[:3])
    for envelope in (first, second, first):  # staged: nothing in PostgreSQL yet
        recorder.handle(Delivery(envelope, batched=True))
    assert store.msg_ids() == []
    recorder.flush()
    assert store.msg_ids() == [fx.msg_id(1), fx.msg_id(2)]
    assert (recorder.stored, recorder.known) == (2, 1)
    # a record the server refuses (NUL is not text there) is left out, alone
    poison = dict(third, msg={"note": "nul \x00 here"}, msg_id="2026-poison")
    recorder.handle(Delivery(poison, batched=True))
    recorder.handle(Delivery(third, batched=True))
    recorder.flush()
    assert store.msg_ids() == [fx.msg_id(n) for n in (1, 2, 3)]
    name = url.rsplit("/", 1)[1]
    with wbdb.admin() as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
            sql.Identifier(name)))
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE datname = %s", (name,))
    try:
        recorder.handle(Delivery(fx.envelope(*fx.MESSAGES[3]), batched=True))
        with pytest.raises(NotHandled, match="history database"):
            recorder.flush()  # the consumer rolls its position back: the batch waits
    finally:
        with wbdb.admin() as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                sql.Identifier(name)))
    store.write_wait = 30.0
    recorder.flush()  # (a consumer would replay it; here it is still staged)
    assert store.msg_ids() == [fx.msg_id(n) for n in (1, 2, 3, 4)]
    store.close()


def test_count_budget_ms_reaches_the_postgresql_store(make_settings, pg_databases):
    store = backends.open_history(make_settings(history={"database": pg_databases(),
                                                         "count_budget_ms": 7}))
    try:
        assert store._count_setup.endswith(b"statement_timeout = 7")  # type: ignore[attr-defined]
    finally:
        store.close()
