"""What the stats rollups cost and save, at N messages (default 200,000) over a year.

Two SQLite histories filled side by side (batches interleaved, so machine load hits
both alike): one as shipped (003_stats.sql triggers), one with the stats triggers
dropped (the insert path before 003). Prints ingest msg/s of each (batched, and one
transaction per message as the recorder commits), then a week's overview from the
rollups against the same counts by GROUP BY over the raw tables (p50/max of 20 runs),
and how long 003_stats.sql takes to fill the rollups of a history stored before it.

    .venv/bin/python bench/stats_quick.py [N]
"""

from __future__ import annotations

import datetime as dt
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from gateway.history import stats
from gateway.history.records import Record
from gateway.history.store import SqliteHistory

START = dt.datetime(2025, 12, 1, tzinfo=dt.UTC).timestamp()
YEAR = 365 * 86400
TOPICS = ("dak.package.accept", "dak.package.new", "debbugs.bug.report", "debbugs.bug.new",
          "debbugs.bug.close", "debbugs.bug.followup", "debbugs.bug.update",
          "wanna-build.build.built", "wanna-build.build.building",
          "wanna-build.build.build-attempted", "wanna-build.build.uploaded",
          "git.branch.update", "git.tag.create")


def records(n: int, rng: random.Random) -> list[Record]:
    out = []
    for i in range(n):
        stamp = int(START + i * YEAR / n)
        user = f"user{min(int(rng.paretovariate(1.2)), 500)}"
        package = f"pkg{min(int(rng.paretovariate(1.1)), 5000)}"
        out.append(Record(msg_id=f"bench-{i}", topic=f"org.debian.dev.{rng.choice(TOPICS)}",
                          category="x", timestamp=float(stamp), publisher="bench", seq_id=i,
                          users=(user,), packages=(package,), text='{"n": 1}',
                          envelope='{"msg": {}}'))
    return out


def drop_stats_triggers(db: sqlite3.Connection) -> None:
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                              " AND name LIKE 'stats_%'").fetchall():
        db.execute(f"DROP TRIGGER {name}")


def direct(db: sqlite3.Connection, start: float, end: float) -> tuple:
    """The overview's numbers without rollups: GROUP BY over the rows of both weeks."""
    week = 7 * 86400
    topics = [db.execute("SELECT topic, COUNT(*) FROM messages WHERE timestamp >= ? AND"
                         " timestamp < ? GROUP BY topic", (a, a + week)).fetchall()
              for a in (start - week, start)]
    tops = [db.execute(
        f"SELECT t.name, COUNT(*) c FROM messages m JOIN {link} l ON l.message_id = m.id"  # noqa: S608
        f" JOIN {table} t ON t.id = l.{key} WHERE m.timestamp >= ? AND m.timestamp < ?"
        " GROUP BY t.id ORDER BY c DESC, t.name LIMIT 10", (start, end)).fetchall()
        for table, link, key in (("users", "user_messages", "user_id"),
                                 ("packages", "package_messages", "package_id"))]
    return topics, tops


def timed(work, runs: int = 20) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2] * 1000, times[-1] * 1000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    rows = records(n, random.Random(1))
    with tempfile.TemporaryDirectory() as tmp:
        shipped = SqliteHistory(Path(tmp) / "shipped.sqlite")
        before = SqliteHistory(Path(tmp) / "before.sqlite")
        drop_stats_triggers(before.writer())
        spent = {"shipped": 0.0, "before": 0.0}
        chunk = 10_000
        for at in range(0, n - 5000, chunk):
            for name, store in (("shipped", shipped), ("before", before)):
                started = time.perf_counter()
                store.add_many(rows[at:min(at + chunk, n - 5000)])
                spent[name] += time.perf_counter() - started
        batched = n - 5000
        one = {"shipped": 0.0, "before": 0.0}
        for record in rows[n - 5000:]:  # the recorder's path: one transaction per message
            for name, store in (("shipped", shipped), ("before", before)):
                db = store.writer()
                started = time.perf_counter()
                db.execute("BEGIN IMMEDIATE")
                store.add(db, record)
                db.execute("COMMIT")
                one[name] += time.perf_counter() - started
        print(f"N = {n:,} messages over a year; load average {os.getloadavg()[0]:.2f}")
        print(f"{'ingest':34} {'without stats':>14} {'with stats':>12} {'ratio':>6}")
        for label, cost in (("add_many, 1000 a transaction", spent),
                            ("one transaction a message", one)):
            count = batched if cost is spent else 5000
            a, b = count / cost["before"], count / cost["shipped"]
            print(f"{label:34} {a:>12,.0f}/s {b:>10,.0f}/s {b / a:>6.2f}")
        week = stats.week_of(dt.datetime.fromtimestamp(START + YEAR / 2, dt.UTC))
        start, end = week.start.timestamp(), week.end.timestamp()
        db = shipped._reader()
        rolled = timed(lambda: stats.overview(shipped, week))
        raw = timed(lambda: direct(db, start, end))
        print(f"overview of {week} (2 weeks of counts, 2 top-10 lists):")
        print(f"  from the rollups          p50 {rolled[0]:7.2f} ms  max {rolled[1]:7.2f} ms")
        print(f"  GROUP BY on the raw rows  p50 {raw[0]:7.2f} ms  max {raw[1]:7.2f} ms"
              f"  ({raw[0] / rolled[0]:.0f}x the rollups)")
        shipped.close()
        db = before.writer()  # make it a history from before 003, then migrate it
        for table in ("stats_topic_days", "stats_user_days", "stats_package_days"):
            db.execute(f"DROP TABLE {table}")
        db.execute("DELETE FROM history_migrations WHERE version = 3")
        before.close()
        started = time.perf_counter()
        SqliteHistory(Path(tmp) / "before.sqlite").close()
        print(f"003_stats.sql on a history of {n:,} messages (fills the rollups): "
              f"{time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
