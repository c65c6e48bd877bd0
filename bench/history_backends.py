"""The history's two backends side by side in one run, at N messages (default 50,000):
batched ingest (add_many), the recorder's per-message transaction, and /raw store
queries (p50/p99 of 40 runs each) on SQLite and on PostgreSQL (after a VACUUM ANALYZE,
which autovacuum would run by itself after such a load).

PostgreSQL: a throwaway database (random name, dropped at the end) on the server of
``BUSGATE_BENCH_PG`` (default ``postgresql://postgres@127.0.0.1:5432``).

    .venv/bin/python bench/history_backends.py [N]
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from gateway.history import query
from gateway.history.pgstore import PostgresHistory
from gateway.history.records import record_of
from gateway.history.store import HistoryStore, SqliteHistory
from gateway.messages import TypeIndex

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history_quick import T0, TAILS, envelope

SERVER = os.environ.get("BUSGATE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
RUNS = 40
QUERIES = [[("topic", f"org.debian.dev.{TAILS[1]}")], [("user", "user7")],
           [("package", "pkg42")], [("start", str(T0 + 6000)), ("end", str(T0 + 12000))],
           [("contains", "word4242")], [("contains", "déjà")]]


def measure(store: HistoryStore, n: int, settle: str | None = None) -> list[str]:
    """``settle``: a PostgreSQL URL to VACUUM ANALYZE after the load, as autovacuum
    does on its own a little later (index-only counts need the visibility map)."""
    index = TypeIndex(())
    records = [record_of(envelope(i), index) for i in range(1, n + 1)]
    started = time.perf_counter()
    store.add_many(records)
    out = [f"add_many {n / (time.perf_counter() - started):,.0f}/s"]
    more = [record_of(envelope(i), index) for i in range(n + 1, n + 2001)]
    started = time.perf_counter()
    for record in more:  # the recorder's own-transaction path
        with store.transaction() as db:
            store.add(db, record)
    out.append(f"1 transaction/message {2000 / (time.perf_counter() - started):,.0f}/s")
    if settle:
        with psycopg.connect(settle, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    for items in QUERIES:
        parsed = query.parse(items)
        times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            store.search(parsed)
            times.append(time.perf_counter() - started)
        times.sort()
        out.append(f"p50 {times[RUNS // 2] * 1000:6.1f} ms  p99 {times[-1] * 1000:6.1f} ms")
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    name = f"busgate_bench_{secrets.token_hex(4)}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            lite = SqliteHistory(Path(tmp) / "h.sqlite")
            pg = PostgresHistory(f"{SERVER}/{name}", query_timeout=30)
            columns = [measure(lite, n), measure(pg, n, settle=pg.url)]
            lite.close()
            pg.close()
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(name)))
    labels = ["ingest", "ingest", *(" ".join(f"{k}={v}" for k, v in q)[:40] for q in QUERIES)]
    print(f"{n:,} messages{'':30}{'SQLite':>34}   {'PostgreSQL':>34}")
    for label, a, b in zip(labels, *columns, strict=True):
        print(f"{label:40} {a:>34}   {b:>34}")


if __name__ == "__main__":
    main()
