"""What the stats rollups cost and save, at N messages (default 200,000) over a year.

Two SQLite histories filled side by side (batches interleaved, so machine load hits
both alike): one as shipped (003_stats.sql triggers), one with the stats triggers
dropped (the insert path before 003). Prints ingest msg/s of each (batched, and one
transaction per message as the recorder commits), then a week's overview from the
rollups against the same counts by GROUP BY over the raw tables (p50/max of 20 runs),
and how long 003_stats.sql takes to fill the rollups of a history stored before it (one
made by the migrations before 003 and filled as that busgate wrote, then opened by the
full store, whose overview is checked against the shipped history's).

    .venv/bin/python bench/stats_quick.py [N]

A tree whose text index is a file of its own filled by a thread (008) runs that thread
for both histories, woken after each commit; ingest is given until stored and until
indexed (CPU µs: all threads). Each timed chunk (the one-a-transaction messages in
chunks of :data:`ONE_CHUNK`) waits for its own index, so one history's indexer does not
run in the other's time. Since 008 the user and package links and their per-day counts
are the index file's, made by that thread: "without stats" drops the history's stats
triggers (the topics'), so on that layout both histories count users and packages per
day, and the difference is the topic rollups alone. The GROUP BY reads the links through
the reader's attached index file.
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

from harness import wait_indexed

from gateway.history import migrate, stats
from gateway.history.records import Record
from gateway.history.store import SqliteHistory

START = dt.datetime(2025, 12, 1, tzinfo=dt.UTC).timestamp()
YEAR = 365 * 86400
#: The one-transaction-a-message ingest alternates between the histories by this many.
ONE_CHUNK = 500
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


def pre_stats_history(path: Path, rows: list[Record]) -> None:
    """A history as a busgate before 003_stats.sql left it (the migrations before 003
    applied), holding ``rows`` as that busgate wrote them: messages, names, links, text."""
    shipped = migrate.migrations("sqlite")
    real = migrate.migrations
    migrate.migrations = lambda backend: [m for m in shipped if m.version < 3]
    try:
        SqliteHistory(path).close()
    finally:
        migrate.migrations = real
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    db.executemany("INSERT INTO messages (id, msg_id, topic, category, timestamp, publisher,"
                   " seq_id, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   ((i, r.msg_id, r.topic, r.category, r.timestamp, r.publisher, r.seq_id,
                     r.envelope) for i, r in enumerate(rows, 1)))
    db.executemany("INSERT INTO messages_text (rowid, body) VALUES (?, ?)",
                   ((i, r.text) for i, r in enumerate(rows, 1)))
    for table, link, key, field in (("users", "user_messages", "user_id", "users"),
                                    ("packages", "package_messages", "package_id",
                                     "packages")):
        names = sorted({name for r in rows for name in getattr(r, field)})
        db.executemany(f"INSERT INTO {table} (name) VALUES (?)",  # noqa: S608
                       ((name,) for name in names))
        ids = dict(db.execute(f"SELECT name, id FROM {table}"))  # noqa: S608
        db.executemany(f"INSERT INTO {link} ({key}, timestamp, message_id)"  # noqa: S608
                       " VALUES (?, ?, ?)",
                       ((ids[name], r.timestamp, i) for i, r in enumerate(rows, 1)
                        for name in getattr(r, field)))
    db.execute("COMMIT")
    db.close()


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
    if n <= 5000:  # the last 5,000 go one a transaction, the rest in batches
        sys.exit(f"stats_quick: N must be over 5,000, not {n:,}")
    rows = records(n, random.Random(1))
    with tempfile.TemporaryDirectory() as tmp:
        shipped = SqliteHistory(Path(tmp) / "shipped.sqlite")
        before = SqliteHistory(Path(tmp) / "before.sqlite")
        drop_stats_triggers(before.writer())
        histories = (("shipped", shipped), ("before", before))
        for _, store in histories:
            if hasattr(store, "start_indexer"):
                store.start_indexer()

        def per_message(store: SqliteHistory, records: list[Record]) -> None:
            db = store.writer()
            for record in records:  # the recorder's path: one transaction per message
                db.execute("BEGIN IMMEDIATE")
                store.add(db, record)
                db.execute("COMMIT")
                getattr(store, "committed", lambda: None)()

        def ingest(span: tuple[int, int, int], work) -> dict[str, dict[str, float]]:
            """``work(store, at)`` for each ``at`` of ``range(*span)``, the histories
            alternating: each one's seconds until stored and indexed, and CPU seconds."""
            spent = {name: {"stored": 0.0, "indexed": 0.0, "cpu": 0.0} for name, _ in histories}
            for at in range(*span):
                for name, store in histories:
                    started, cpu = time.perf_counter(), time.process_time()
                    work(store, at)
                    spent[name]["stored"] += time.perf_counter() - started
                    wait_indexed(store)
                    spent[name]["indexed"] += time.perf_counter() - started
                    spent[name]["cpu"] += time.process_time() - cpu
            return spent

        batched = n - 5000
        spent = ingest((0, batched, 10_000),  # add_many's transactions wake the indexer
                       lambda store, at: store.add_many(rows[at:min(at + 10_000, batched)]))
        one = ingest((batched, n, ONE_CHUNK),
                     lambda store, at: per_message(store, rows[at:min(at + ONE_CHUNK, n)]))
        print(f"N = {n:,} messages over a year; load average {os.getloadavg()[0]:.2f}")
        print(f"{'ingest':34} {'until':>7} {'without stats':>14} {'with stats':>12} {'ratio':>6}"
              f" {'CPU µs without / with':>22}")
        for label, cost in (("add_many, 1000 a transaction", spent),
                            ("one transaction a message", one)):
            count = batched if cost is spent else 5000
            for until in ("stored", "indexed"):
                a, b = count / cost["before"][until], count / cost["shipped"][until]
                cpu = "" if until == "stored" else (
                    f" {cost['before']['cpu'] / count * 1e6:>12.0f} / "
                    f"{cost['shipped']['cpu'] / count * 1e6:.0f}")
                print(f"{label if until == 'stored' else '':34} {until:>7} {a:>12,.0f}/s "
                      f"{b:>10,.0f}/s {b / a:>6.2f}{cpu}")
        week = stats.week_of(dt.datetime.fromtimestamp(START + YEAR / 2, dt.UTC))
        start, end = week.start.timestamp(), week.end.timestamp()
        db = shipped._reader()
        rolled = timed(lambda: stats.overview(shipped, week))
        raw = timed(lambda: direct(db, start, end))
        print(f"overview of {week} (2 weeks of counts, 2 top-10 lists):")
        print(f"  from the rollups          p50 {rolled[0]:7.2f} ms  max {rolled[1]:7.2f} ms")
        print(f"  GROUP BY on the raw rows  p50 {raw[0]:7.2f} ms  max {raw[1]:7.2f} ms"
              f"  ({raw[0] / rolled[0]:.0f}x the rollups)")
        expected = stats.overview(shipped, week)
        shipped.close()
        before.close()
        path = Path(tmp) / "pre-003.sqlite"
        pre_stats_history(path, rows)
        started = time.perf_counter()
        store = SqliteHistory(path)  # migrates it: 003 on
        store.writer()
        opened = time.perf_counter() - started
        wait_indexed(store)
        same = stats.overview(store, week) == expected
        store.close()
        applied = [m.name for m in migrate.migrations("sqlite") if m.version >= 3]
        print(f"a history of {n:,} messages from before 003, opened by the full store "
              f"({applied[0]} to {applied[-1]}, 003 filling the rollups): {opened:.2f} s;"
              f" its overview {'is' if same else 'is NOT'} the shipped history's")

if __name__ == "__main__":
    main()
