"""Weekly overview (``busgate stats``, ``/stats``, ``/v2/stats``) on a fixture history of two
ISO weeks with known counts, and the stats rollups checked against direct counts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import sqlite3
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.cli import main
from gateway.history import indexfile, migrate, stats
from gateway.history.records import Record, record_of
from gateway.history.store import DAY, MAX_STATS_DAYS, HistoryError, SqliteHistory
from gateway.messages import TypeIndex
from tests import history_fixture as fx
from tests.conftest import BUSGATE

UTC = dt.UTC
W47, W48 = stats.Week(2026, 47), stats.Week(2026, 48)

#: (UTC time, topic tail, users, packages). 2026-W48 is Mon 23 to Sun 29 November.
HISTORY: list[tuple[str, str, list[str], list[str]]] = [
    # -- 2026-W47 (previous week)
    ("2026-11-16 09:00:00", "dak.package.accept", ["jorg"], ["hebcal"]),
    ("2026-11-17 10:00:00", "debbugs.bug.close", ["guillem"], ["dpkg"]),
    ("2026-11-18 11:00:00", "debbugs.bug.close", ["guillem"], ["dpkg"]),
    ("2026-11-19 12:00:00", "debbugs.bug.close", [], ["apt"]),
    ("2026-11-20 13:00:00", "git.branch.update", ["guillem"], ["dpkg"]),
    ("2026-11-22 23:59:59", "git.branch.update", ["guillem"], ["dpkg"]),  # W47's last second
    # -- 2026-W48
    ("2026-11-23 00:00:00", "dak.package.accept", ["guillem"], ["dpkg"]),  # W48's first second
    ("2026-11-23 08:00:00", "dak.package.accept", ["guillem"], ["dpkg"]),
    ("2026-11-24 08:00:00", "dak.package.accept", ["jorg"], ["hebcal"]),
    ("2026-11-24 09:00:00", "dak.package.new", ["jorg"], ["hebcal"]),  # not an upload (yet)
    ("2026-11-24 10:00:00", "debbugs.bug.new", ["<b>mallory</b>"], ["apt"]),
    ("2026-11-25 10:00:00", "debbugs.bug.report", ["anna"], ["apt"]),
    ("2026-11-25 11:00:00", "debbugs.bug.close", ["anna"], ["apt"]),
    ("2026-11-26 11:00:00", "debbugs.bug.close", ["guillem"], ["dpkg"]),
    ("2026-11-26 12:00:00", "dak.bug.close", ["guillem"], ["dpkg"]),  # dak's claim: not twice
    ("2026-11-27 01:00:00", "wanna-build.build.built", [], ["dpkg"]),
    ("2026-11-27 02:00:00", "wanna-build.build.built", [], ["a/b?c"]),
    ("2026-11-27 03:00:00", "wanna-build.build.build-attempted", [], ["hebcal"]),
    ("2026-11-27 04:00:00", "wanna-build.build.failed", [], ["hebcal"]),  # verdict: not twice
    ("2026-11-27 05:00:00", "wanna-build.build.needs-build", [], ["apt"]),
    ("2026-11-28 06:00:00", "git.branch.update", ["anna"], ["apt"]),
    ("2026-11-29 23:59:59", "git.tag.create", ["anna"], ["apt"]),  # W48's last second
    # -- 2026-W49
    ("2026-11-30 00:00:00", "dak.package.accept", ["zoe"], ["zsh"]),  # W49's first second
]


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def envelopes(history=HISTORY, prefix: str = fx.PREFIX) -> list[dict]:
    out = []
    for number, (when, tail, users, packages) in enumerate(history, 1):
        env = fx.envelope(number, (at(when) - fx.T0) / fx.HOUR, tail, users, packages, {})
        env["topic"] = f"{prefix}.{tail}"
        out.append(env)
    return out


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stats") / "h.sqlite"
    store = SqliteHistory(path)
    store.add_many(record_of(env, TypeIndex(())) for env in envelopes())
    store.close()
    return path


@pytest.fixture(scope="module")
def store(history):
    opened = SqliteHistory(history, readonly=True)
    yield opened
    opened.close()


def kinds(found: stats.Overview) -> dict[str, tuple[int, int, int]]:
    return {k.name: (k.count, k.previous, k.change) for k in found.kinds}


# -- the overview -------------------------------------------------------------------------
def test_week_counts_and_changes_against_the_week_before(store):
    found = stats.overview(store, W48)
    assert kinds(found) == {"uploads": (3, 1, 2), "bugs_opened": (2, 0, 2),
                            "bugs_closed": (2, 3, -1), "builds": (3, 0, 3),
                            "pushes": (2, 2, 0)}
    builds = next(k for k in found.kinds if k.name == "builds").details
    assert {n: (c.count, c.previous) for n, c in builds.items()} == {"built": (2, 0),
                                                                    "failed": (1, 0)}
    pushes = next(k for k in found.kinds if k.name == "pushes").details
    assert {n: (c.count, c.previous) for n, c in pushes.items()} == {"branches": (1, 2),
                                                                    "tags": (1, 0)}
    assert (found.messages.count, found.messages.previous) == (16, 6)
    assert found.complete


def test_top_lists_count_descending_then_name(store):
    found = stats.overview(store, W48)
    assert found.packages == [("apt", 6), ("dpkg", 5), ("hebcal", 4), ("a/b?c", 1)]
    assert found.users == [("anna", 4), ("guillem", 4), ("jorg", 2), ("<b>mallory</b>", 1)]
    assert stats.overview(store, W48, top=2).users == [("anna", 4), ("guillem", 4)]


def test_week_boundaries_are_monday_midnight_utc(store):
    monday = W48.start.timestamp()
    assert W48.start == dt.datetime(2026, 11, 23, tzinfo=UTC)
    assert store.topic_counts(monday - 1, monday) == {f"{fx.PREFIX}.git.branch.update": 1}
    assert store.topic_counts(monday, monday + 1) == {f"{fx.PREFIX}.dak.package.accept": 1}
    sunday_last = W48.end.timestamp() - 1
    assert store.topic_counts(sunday_last, sunday_last + 1) == {f"{fx.PREFIX}.git.tag.create": 1}
    w49 = stats.overview(store, stats.Week(2026, 49))
    assert kinds(w49)["uploads"] == (1, 3, -2)
    assert kinds(w49)["pushes"] == (0, 2, -2)


def test_a_renamed_git_service_still_counts_as_pushes(tmp_path):
    from adapters.scm import messages as scm

    index = TypeIndex(scm.TYPES, scm.topic_overrides(type("S", (), {"service": "vcs"})))
    assert stats.kind_of("org.debian.dev.vcs.branch.update", index) == ("pushes", "branches")
    assert stats.kind_of("org.debian.dev.vcs.branch.update", None) is None
    assert stats.kind_of("org.debian.dev.git.tag.delete", None) == ("pushes", "tags")
    assert stats.kind_of("org.debian.dev.wanna-build.build.built", None) == ("builds", "built")
    assert stats.kind_of("org.debian.dev.debbugs.bug.followup", None) is None


def test_a_new_kind_is_declared_by_its_message_type(store):
    from gateway.messages import Message, counts_as

    class ArchiveNew(Message):
        name = "test.archive.new.v1"
        topic_tokens = ("dak", "package", "new")
        overview = counts_as({"new": ("archive", "any")})

    types = [t for t in stats.default_index().types()
             if t.topic_tokens != ArchiveNew.topic_tokens and t is not Message]
    found = stats.overview(store, W48, index=TypeIndex([*types, ArchiveNew]))
    archive = next(k for k in found.kinds if k.name == "archive")
    assert (archive.count, archive.previous) == (1, 0)  # dak.package.new; accept stays exact
    assert kinds(found)["uploads"] == (3, 1, 2)


@pytest.mark.parametrize(("text", "week"), [
    ("2026-W48", (2026, 48)), ("2020-W53", (2020, 53)), ("2020-W01", (2020, 1)),
    (" 2026-W01 ", (2026, 1)), ("1970-W02", (1970, 2)),
])
def test_weeks_are_read(text, week):
    assert stats.parse_week(text) == stats.Week(*week)


@pytest.mark.parametrize(("text", "reason"), [
    ("2025-W53", "no week 53"), ("2026-W00", "no week 0"), ("2026-W54", "no week 54"),
    ("2026w48", "not an ISO week"), ("2026-48", "not an ISO week"), ("", "not an ISO week"),
    ("2026-W4", "not an ISO week"), ("x" * 10000, "not an ISO week"),
    ("1969-W30", "before 1970"), ("9999-W52", "in the future"),
])
def test_bad_weeks_are_refused_with_the_reason(text, reason):
    with pytest.raises(stats.BadWeek, match=reason):
        stats.parse_week(text)


def test_the_default_is_the_last_complete_week():
    monday = dt.datetime(2026, 11, 30, tzinfo=UTC)
    assert stats.last_complete_week(monday) == W48
    assert stats.last_complete_week(monday - dt.timedelta(seconds=1)) == W47
    assert stats.Week(2026, 1).previous() == stats.Week(2025, 52)
    assert stats.Week(2026, 53).following() == stats.Week(2027, 1)


# -- the command ---------------------------------------------------------------------------
def test_cli_text_table(history, capsys):
    assert main(["stats", "--week", "2026-W48", "--database", str(history)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("busgate weekly overview 2026-W48: 2026-11-23 to 2026-11-29 (UTC)\n")
    lines = out.splitlines()
    assert lines[2].split() == ["this", "week", "last", "week", "change"]
    assert [line.split() for line in lines[3:14]] == [
        ["uploads", "3", "1", "+2"], ["bugs", "opened", "2", "0", "+2"],
        ["bugs", "closed", "2", "3", "-1"], ["builds", "3", "0", "+3"],
        ["built", "2", "0", "+2"], ["failed", "1", "0", "+1"], ["pushes", "2", "2", "0"],
        ["branches", "1", "2", "-1"], ["tags", "1", "0", "+1"],
        ["all", "messages", "16", "6", "+10"], []]
    packages = lines[lines.index("Most active packages:") + 1:][:4]
    assert [p.split() for p in packages] == [["1.", "apt", "6"], ["2.", "dpkg", "5"],
                                             ["3.", "hebcal", "4"], ["4.", "a/b?c", "1"]]


def test_cli_json_and_top(history, capsys):
    assert main(["stats", "--week", "2026-W48", "--json", "--top", "1",
                 "--database", str(history)]) == 0
    answer = orjson.loads(capsys.readouterr().out)
    assert answer["week"] == "2026-W48" and answer["previous_week"] == "2026-W47"
    assert answer["start"] == "2026-11-23T00:00:00+00:00"
    assert answer["end"] == "2026-11-30T00:00:00+00:00"
    assert answer["kinds"][0] == {"kind": "uploads", "count": 3, "previous": 1, "change": 2,
                                  "details": {"accepted": {"count": 3, "previous": 1,
                                                           "change": 2}}}
    assert answer["packages"] == [{"name": "apt", "count": 6}]
    assert answer["users"] == [{"name": "anna", "count": 4}]


def test_cli_default_week(history, capsys):
    assert main(["stats", "--week", "--json", "--database", str(history)]) == 0
    assert orjson.loads(capsys.readouterr().out)["week"] == str(stats.last_complete_week())


@pytest.mark.parametrize(("args", "message"), [
    (["--week", "2025-W53"], "--week: 2025 has no week 53"),
    (["--week", "next"], "not an ISO week"),
    (["--top", "0"], "--top must be 1..100"),
    (["--top", "101"], "--top must be 1..100"),
])
def test_cli_bad_input_exits_2(history, capsys, args, message):
    assert main(["stats", *args, "--database", str(history)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_missing_database_exits_2_and_creates_nothing(tmp_path):
    missing = tmp_path / "none.sqlite"
    done = subprocess.run([*BUSGATE, "stats", "--week", "2026-W48", "--database",
                           str(missing)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "no history database" in done.stderr and "Traceback" not in done.stderr
    assert not missing.exists()


def test_cli_refuses_what_is_not_a_history(tmp_path, capsys):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_text("not sqlite")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (a)")
    for path, message in ((garbage, "file is not a database"),
                          (other, "not a busgate history database")):
        assert main(["stats", "--database", str(path)]) == 2
        assert message in capsys.readouterr().err


def test_cli_reads_without_migrating(tmp_path, capsys):
    path = tmp_path / "old.sqlite"
    _without_stats_migration(path, [])
    assert main(["stats", "--week", "2026-W48", "--database", str(path)]) == 2
    assert "lacks 003_stats.sql" in capsys.readouterr().err
    with sqlite3.connect(path) as db:  # still without it: the reader wrote nothing
        assert 3 not in {v for (v,) in db.execute("SELECT version FROM history_migrations")}


# -- the web -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def web(history):
    store = SqliteHistory(history)
    with fx.serve(store) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client
    store.close()


def test_v2_stats_json(web):
    response = web.get("/v2/stats", params={"week": "2026-W48", "top": "3"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert [(k["kind"], k["count"], k["change"]) for k in body["kinds"]] == [
        ("uploads", 3, 2), ("bugs_opened", 2, 2), ("bugs_closed", 2, -1), ("builds", 3, 3),
        ("pushes", 2, 0)]
    assert [p["name"] for p in body["packages"]] == ["apt", "dpkg", "hebcal"]


def test_stats_page_escapes_and_links(web):
    response = web.get("/stats?week=2026-W48")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    assert '<meta name="viewport"' in page
    assert "<b>mallory</b>" not in page
    assert '<a href="/user/%3Cb%3Emallory%3C%2Fb%3E">&lt;b&gt;mallory&lt;/b&gt;</a>' in page
    assert '<a href="/package/a%2Fb%3Fc">a/b?c</a>' in page
    assert '<a href="/package/apt">apt</a> <span>6</span>' in page
    assert '<td>uploads</td><td class="n">3</td><td class="n">1</td>' in page
    assert 'href="/stats?week=2026-W47"' in page and 'href="/stats?week=2026-W49"' in page


@pytest.mark.parametrize(("query", "parameter"), [
    ("week=2025-W53", "week"), ("week=soon", "week"), ("week=2999-W01", "week"),
    ("top=0", "top"), ("top=101", "top"), ("top=ten", "top"), ("weeks=2", "weeks"),
    ("week=2026-W48&week=2026-W47", "week"),
])
def test_bad_parameters_are_400(web, query, parameter):
    response = web.get(f"/v2/stats?{query}")
    assert response.status_code == 400
    assert response.json()["parameter"] == parameter
    page = web.get(f"/stats?{query}")
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert "Traceback" not in page.text


# -- the rollups ---------------------------------------------------------------------------
TOPICS = ["dak.package.accept", "debbugs.bug.close", "git.branch.update", "wanna-build.build.built"]
NAMES = ["anna", "bob", "chen", "dpkg", "apt", "zsh"]


def _random_records(rng: random.Random, count: int, base: float) -> list[Record]:
    out = []
    for number in range(count):
        stamp = int(base + rng.randrange(0, 21 * DAY))
        if rng.random() < 0.1:  # on a day boundary
            stamp -= stamp % DAY
        users = tuple(rng.sample(NAMES[:3], rng.randrange(0, 3)))
        packages = tuple(rng.sample(NAMES[3:], rng.randrange(0, 3)))
        out.append(Record(msg_id=f"r-{base}-{number}", topic=f"{fx.PREFIX}.{rng.choice(TOPICS)}",
                          category="x", timestamp=float(stamp), publisher=None, seq_id=None,
                          users=users, packages=packages, text="{}", envelope="{}"))
    return out


def _direct_rollups(db: sqlite3.Connection) -> dict[str, set]:
    day = "CAST(timestamp / 86400 AS INTEGER)"  # the records here are after 1970
    return {
        "stats_topic_days": (f"SELECT {day}, topic, COUNT(*) FROM messages GROUP BY 1, 2",
                             "SELECT day, topic, messages FROM stats_topic_days"),
        "stats_user_days": (f"SELECT {day}, user_id, COUNT(*) FROM user_messages GROUP BY 1, 2",
                            "SELECT day, user_id, messages FROM stats_user_days"),
        "stats_package_days": (f"SELECT {day}, package_id, COUNT(*) FROM package_messages"
                               " GROUP BY 1, 2",
                               "SELECT day, package_id, messages FROM stats_package_days"),
    }


def both(store: SqliteHistory) -> sqlite3.Connection:
    """A connection to the history with its index file attached (links, name rollups),
    both writable: what these checks read, and what a retention would write."""
    db = sqlite3.connect(store.path, isolation_level=None)
    db.execute("ATTACH DATABASE ? AS idx", (str(indexfile.index_path(store.path)),))
    return db


def assert_rollups_match(db: sqlite3.Connection) -> None:
    for table, (direct, rolled) in _direct_rollups(db).items():
        assert set(db.execute(direct)) == set(db.execute(rolled)), table


def _direct_topics(db, start, end):
    return dict(db.execute("SELECT topic, COUNT(*) FROM messages WHERE timestamp >= ?"
                           " AND timestamp < ? GROUP BY topic", (start, end)))


def _direct_top(db, kind, start, end, limit):
    table, link, key = {"users": ("users", "user_messages", "user_id"),
                        "packages": ("packages", "package_messages", "package_id")}[kind]
    return [tuple(r) for r in db.execute(
        f"SELECT t.name, COUNT(*) AS c FROM {link} l JOIN {table} t ON t.id = l.{key}"
        " WHERE l.timestamp >= ? AND l.timestamp < ? GROUP BY t.name ORDER BY c DESC, t.name"
        " LIMIT ?", (start, end, limit))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollups_equal_direct_counts_after_inserts_and_deletes(tmp_path, seed):
    rng = random.Random(seed)
    base = W47.start.timestamp()
    store = SqliteHistory(tmp_path / "h.sqlite")
    db = both(store)
    for _ in range(3):  # several batches, then the same again (stored once: counted once)
        batch = _random_records(rng, 150, base + rng.randrange(0, 10**6))
        store.add_many(batch)
        store.add_many(batch[:20])
        assert_rollups_match(db)
    for _ in range(20):  # any range: whole days from the rollups, part days from the rows
        start = base + rng.uniform(-DAY, 12 * 10**5)
        end = start + rng.choice([0, 1, DAY, 7 * DAY, rng.uniform(0, 30 * DAY)])
        assert store.topic_counts(start, end) == _direct_topics(db, start, end)
        for kind in ("users", "packages"):
            limit = rng.randrange(1, 5)
            assert store.top_names(kind, start, end, limit) == \
                _direct_top(db, kind, start, end, limit)
    db.execute("BEGIN")  # what a history retention would do: the rollups follow
    doomed = "SELECT id FROM messages WHERE id % 3 = 0"
    db.execute(f"DELETE FROM user_messages WHERE message_id IN ({doomed})")  # index file
    db.execute(f"DELETE FROM package_messages WHERE message_id IN ({doomed})")
    db.execute(f"DELETE FROM message_names WHERE message_id IN ({doomed})")
    db.execute("UPDATE messages SET timestamp = timestamp + 86400 WHERE id % 3 = 1")
    db.execute(f"DELETE FROM messages WHERE id IN ({doomed})")
    db.execute("COMMIT")
    assert_rollups_match(db)
    assert db.execute("SELECT COUNT(*) FROM stats_topic_days WHERE messages <= 0").fetchone() \
        == (0,)
    assert db.execute("SELECT COUNT(*) FROM stats_user_days WHERE messages <= 0").fetchone() \
        == (0,)
    db.close()
    store.close()


def _without_stats_migration(path: Path, records: list[Record]) -> None:
    """A history as a busgate before 003_stats.sql (and so all after it) left it,
    holding ``records``."""
    shipped = migrate.migrations("sqlite")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(migrate, "migrations",
                      lambda backend: [m for m in shipped if m.version < 3])
        SqliteHistory(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'"
                          " AND name LIKE 'stats_%'").fetchone() == (0,)
    db = sqlite3.connect(path, isolation_level=None)  # add rows without migrating
    db.execute("BEGIN")
    for record in records:
        fx.add_as_v1(db, record)
    db.execute("COMMIT")
    db.close()


def test_the_migration_fills_rollups_for_rows_stored_before_it(tmp_path):
    path = tmp_path / "old.sqlite"
    records = _random_records(random.Random(7), 300, W47.start.timestamp())
    _without_stats_migration(path, records)
    with pytest.raises(HistoryError, match=r"lacks 003_stats\.sql"):
        SqliteHistory(path, readonly=True)
    store = SqliteHistory(path)  # migrates: 003 fills the rollups (008: the names' in the
    db = both(store)  # index file, from message_names)
    assert db.execute("SELECT SUM(messages) FROM stats_topic_days").fetchone() == (300,)
    assert_rollups_match(db)
    store.add_many(_random_records(random.Random(8), 50, W48.start.timestamp()))
    assert_rollups_match(db)  # and the triggers keep them from then on
    store.close()


def test_store_bounds(store):
    start = W48.start.timestamp()
    with pytest.raises(ValueError, match="at most 400 days"):
        store.topic_counts(start, start + (MAX_STATS_DAYS + 1) * DAY)
    with pytest.raises(ValueError, match="not a time range"):
        store.topic_counts(start, start - 1)
    with pytest.raises(ValueError, match="not a time range"):
        store.top_names("users", start, float("inf"), 3)
    for limit in (0, 1001):
        with pytest.raises(ValueError, match=r"limit must be 1\.\.1000"):
            store.top_names("users", start, start + DAY, limit)
    with pytest.raises(ValueError, match="kind must be"):
        store.top_names("topics", start, start + DAY, 3)
    with pytest.raises(ValueError, match=r"top must be 1\.\.100"):
        stats.overview(store, W48, top=101)


def test_topic_counts_keep_the_busiest_topics_only(store, monkeypatch):
    from gateway.history import store as store_module

    monkeypatch.setattr(store_module, "MAX_TOPICS", 2)
    found = store.topic_counts(W48.start.timestamp(), W48.end.timestamp())
    assert found == {f"{fx.PREFIX}.dak.package.accept": 3,
                     f"{fx.PREFIX}.debbugs.bug.close": 2}


def test_the_current_week_is_shown_as_not_over_and_the_next_refused(store):
    now = dt.datetime(2026, 11, 25, 12, tzinfo=UTC)  # a Wednesday of 2026-W48
    assert stats.parse_week("2026-W48", now) == W48
    with pytest.raises(stats.BadWeek, match="in the future"):
        stats.parse_week("2026-W49", now)
    found = stats.overview(store, W48, now=now)
    assert not found.complete and found.as_json()["complete"] is False


def test_a_stats_query_past_its_time_limit_is_503(history):
    from gateway.history.store import QueryTimeout

    class Slow(SqliteHistory):
        def topic_counts(self, start, end):  # what _timed raises when the limit passes
            raise QueryTimeout("the query ran past history.query_timeout (0.01 s)")

    store = Slow(history, readonly=True)
    with fx.serve(store) as url, httpx.Client(base_url=url, timeout=10) as client:
        answer = client.get("/v2/stats?week=2026-W48")
        assert answer.status_code == 503 and answer.json()["error"] == "timeout"
        page = client.get("/stats?week=2026-W48")
        assert page.status_code == 503 and "query_timeout" in page.text
    store.close()


def test_a_migration_numbered_below_the_applied_ones_is_still_applied(tmp_path, monkeypatch):
    from gateway.history import migrate

    path = tmp_path / "h.sqlite"
    shipped = migrate.migrations("sqlite")
    high = migrate.Migration(51, "051_high.sql", "CREATE TABLE high (a INTEGER)")
    late = migrate.Migration(50, "050_late.sql", "CREATE TABLE late (a INTEGER)")
    monkeypatch.setattr(migrate, "migrations", lambda backend: [*shipped, high])
    SqliteHistory(path).close()  # everything shipped, and 051
    monkeypatch.setattr(migrate, "migrations", lambda backend: [*shipped, late, high])
    SqliteHistory(path).close()  # a busgate that also has 050 (another branch's): it lands
    with sqlite3.connect(path) as db:
        assert [v for (v,) in db.execute("SELECT version FROM history_migrations"
                                         " ORDER BY applied, version")][-2:] == [51, 50]
        assert db.execute("SELECT COUNT(*) FROM late").fetchone() == (0,)


ROLLUP_TABLES = ("activity_hourly", "stats_topic_days", "stats_user_days",
                 "stats_package_days")


def _rollup_rows(store: SqliteHistory) -> dict[str, list[tuple]]:
    """Every rollup, keyed by names (ids differ between two stores)."""
    db = both(store)
    return {
        "activity_hourly": sorted(db.execute("SELECT * FROM activity_hourly")),
        "stats_topic_days": sorted(db.execute("SELECT * FROM stats_topic_days")),
        "stats_user_days": sorted(db.execute(
            "SELECT day, name, messages FROM stats_user_days JOIN users ON id = user_id")),
        "stats_package_days": sorted(db.execute(
            "SELECT day, name, messages FROM stats_package_days JOIN packages ON id = package_id")),
    }


@pytest.mark.parametrize(("seed", "aside_min"), [(1, 1), (2, 1), (1, 10**9)])
def test_a_batch_keeps_the_rollups_as_the_triggers_do(tmp_path, monkeypatch, seed, aside_min):
    from gateway.history import store as history_store

    # triggers dropped for the batch (aside_min 1) or standing aside in place (10**9)
    monkeypatch.setattr(history_store, "TRIGGERS_ASIDE_MIN", aside_min)
    rng = random.Random(seed)
    records = []
    for base in (W47.start.timestamp(), -3 * DAY - 0.5, 0.0):  # before 1970 and at it
        records += _random_records(rng, 120, base)
    records = [dataclasses.replace(r, category=rng.choice(["dak", "bugs", "git"]),
                                   timestamp=r.timestamp - rng.choice([0, 0.25]))
               for r in records]
    far = dataclasses.replace(records[0], msg_id="far", timestamp=2e15)  # the triggers' own
    bad = dataclasses.replace(records[1], msg_id="bad", users=("\ud800",))  # refused alone
    by_triggers = SqliteHistory(tmp_path / "triggers.sqlite")
    by_triggers.add_many([*records, far])
    batched = SqliteHistory(tmp_path / "batched.sqlite")
    db = batched.writer()
    chunks = [records[:100], [*records[100:250], *records[:10]], records[250:300],
              [*records[300:], far], [*records[:5], bad]]
    for chunk in chunks:
        db.execute("BEGIN IMMEDIATE")
        for record in chunk:
            batched.stage(db, record)
        batched.flush(db)
        db.execute("COMMIT")
        batched.committed()
    assert batched.count() == by_triggers.count() == len(records) + 1
    assert _rollup_rows(batched) == _rollup_rows(by_triggers)
    assert db.execute("SELECT COUNT(*) FROM rollups_deferred").fetchone() == (0,)
    assert _triggers(batched) == _triggers(by_triggers)  # back after every batch
    more = _random_records(rng, 30, W48.start.timestamp())
    for store in (batched, by_triggers):  # the triggers count again after a batch
        store.add_many(more)
    assert _rollup_rows(batched) == _rollup_rows(by_triggers)
    batched.close()
    by_triggers.close()


def _triggers(store: SqliteHistory) -> list[tuple[str, str]]:
    return sorted(store.writer().execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))


def test_a_batch_sets_the_insert_triggers_aside_only_inside_its_transaction(tmp_path,
                                                                           monkeypatch):
    from gateway.history import store as history_store

    monkeypatch.setattr(history_store, "TRIGGERS_ASIDE_MIN", 20)
    store = SqliteHistory(tmp_path / "h.sqlite")
    before = _triggers(store)
    assert {name for name, _ in before} >= set(history_store.BATCH_TRIGGERS)
    rng = random.Random(3)
    records = _random_records(rng, 59, W47.start.timestamp())
    db = store.writer()
    reader = sqlite3.connect(tmp_path / "h.sqlite")

    def version() -> int:
        return reader.execute("PRAGMA schema_version").fetchone()[0]

    first = version()
    db.execute("BEGIN IMMEDIATE")  # below TRIGGERS_ASIDE_MIN: the schema is left alone
    for record in records[40:]:
        store.stage(db, record)
    store.flush(db)
    db.execute("COMMIT")
    assert version() == first
    db.execute("BEGIN IMMEDIATE")  # TRIGGERS_ASIDE_MIN: dropped and created again
    for record in records[:20]:
        store.stage(db, record)
    store.flush(db)
    # another connection never sees the tables without them: still all there for it
    assert sorted(reader.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")) \
        == before
    db.execute("COMMIT")
    assert _triggers(store) == before
    assert version() > first
    db.execute("BEGIN IMMEDIATE")  # a batch rolled back (a kill, a failed commit)
    for record in records[20:40]:
        store.stage(db, record)
    store.flush(db)
    db.execute("ROLLBACK")
    store.forget()
    assert _triggers(store) == before
    # a message inserted by hand after the batches is counted by the triggers
    reader.execute("INSERT INTO messages (msg_id, topic, category, timestamp, envelope)"
                   " VALUES ('by-hand', 't', 'c', ?, '{}')", (W48.start.timestamp(),))
    reader.commit()
    day = int(W48.start.timestamp() // DAY)
    assert reader.execute("SELECT messages FROM stats_topic_days WHERE day = ? AND topic = 't'",
                          (day,)).fetchone() == (1,)
    assert reader.execute("SELECT count FROM activity_hourly WHERE category = 'c'"
                          ).fetchone() == (1,)
    reader.close()
    store.close()
