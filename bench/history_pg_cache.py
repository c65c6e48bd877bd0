"""A PostgreSQL bench history of N messages, loaded by COPY (minutes, not an hour).

    .venv/bin/python bench/history_pg_cache.py --database busgate_bench_pg1m [--messages 1000000]

The server: ``BUSGATE_BENCH_PG_ADMIN`` (default postgres@127.0.0.1:5432/postgres). The
schema is the running tree's (PYTHONPATH): build a template with the oldest tree a
side-by-side bench compares, so every tree can migrate it forward.

Why: bench/history.py builds its PostgreSQL history through the store's own write path
(~1,300 messages/s at 1M: 13+ minutes, and a failed run starts again); the benches that
time ingest *at* a million stored messages need only the same rows. This writes the
same messages (``history_data.envelopes(n)``, as the SQLite cache holds) as the store
would: the schema by the store's migrations, names and links as ``pgstore`` writes
them, the rollups filled by the migrations' own ``GROUP BY`` statements, the trigram
index built once after the load, then ``VACUUM ANALYZE`` (what autovacuum does after a
bulk load). The rows share one transaction id, as rows stored before 006 do.
Refuses a database that exists (drop it first): a cache is never written in place.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

HERE = Path(__file__).resolve()
ADMIN = os.environ.get("BUSGATE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
#: Messages generated and copied per round (bounds the builder's memory).
CHUNK = 50_000
_ROLLUPS = (
    "INSERT INTO activity_hourly (hour, category, count) SELECT floor(timestamp / 3600)::bigint,"
    " category, COUNT(*) FROM messages GROUP BY 1, 2",
    "INSERT INTO stats_topic_days (day, topic, messages) SELECT floor(timestamp / 86400)::bigint,"
    " topic, COUNT(*) FROM messages GROUP BY 1, 2",
    "INSERT INTO stats_user_days (day, user_id, messages) SELECT floor(timestamp / 86400)::bigint,"
    " user_id, COUNT(*) FROM user_messages GROUP BY 1, 2",
    "INSERT INTO stats_package_days (day, package_id, messages) SELECT"
    " floor(timestamp / 86400)::bigint, package_id, COUNT(*) FROM package_messages GROUP BY 1, 2")


def build(database: str, n: int) -> None:
    sys.path.insert(0, str(HERE.parent))
    import history_data as data

    from gateway.history.pgstore import PostgresHistory
    from gateway.history.records import record_of
    from gateway.messages import TypeIndex

    with psycopg.connect(ADMIN, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            raise SystemExit(f"{database} exists: drop it first (a cache is never rebuilt"
                             " in place)")
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = ADMIN.rsplit("/", 1)[0] + "/" + database
    PostgresHistory(url).close()  # the schema, by the store's own migrations
    started = time.perf_counter()
    index = TypeIndex(())
    names: dict[str, dict[str, int]] = {"users": {}, "packages": {}}
    with psycopg.connect(url) as conn:
        conn.execute("SET session_replication_role = replica")  # no triggers: rollups below
        (text_index,) = conn.execute(  # the schema's own (011: topic, category, words)
            "SELECT pg_get_indexdef('messages_body_trgm'::regclass)").fetchone()
        conn.execute("DROP INDEX messages_body_trgm")  # built once, after the rows
        conn.execute("SET LOCAL synchronous_commit = off")  # a bench cache, rebuilt if lost
        message_id = 0
        batch: list = []

        def flush() -> None:
            nonlocal message_id
            links: dict[str, list[tuple[int, float, int, str]]] = {"users": [],
                                                                    "packages": []}
            new_names: dict[str, list[tuple[int, str]]] = {"users": [], "packages": []}
            with conn.cursor().copy("COPY messages (id, msg_id, topic, category, timestamp,"
                                    " publisher, seq_id, envelope, body) FROM STDIN"
                                    " (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "text", "text", "text", "float8", "text", "int8",
                                "text", "text"])
                for record in batch:
                    message_id += 1
                    copy.write_row((message_id, record.msg_id, record.topic, record.category,
                                    record.timestamp, record.publisher, record.seq_id,
                                    record.envelope, record.text))
                    for kind in ("users", "packages"):
                        known = names[kind]
                        for name in dict.fromkeys(getattr(record, kind)):
                            if name not in known:
                                known[name] = len(known) + 1
                                new_names[kind].append((known[name], name))
                            links[kind].append((known[name], record.timestamp, message_id,
                                                record.category))
            for kind, table in (("users", "user_messages"), ("packages", "package_messages")):
                key = "user_id" if kind == "users" else "package_id"
                with conn.cursor().copy(f"COPY {kind} (id, name) FROM STDIN") as copy:
                    for row in new_names[kind]:
                        copy.write_row(row)
                with conn.cursor().copy(f"COPY {table} ({key}, timestamp, message_id,"
                                        " category) FROM STDIN") as copy:  # category: 009
                    for row in sorted(set(links[kind])):
                        copy.write_row(row)
            batch.clear()

        for envelope in data.envelopes(n):
            batch.append(record_of(envelope, index))
            if len(batch) >= CHUNK:
                flush()
                rate = message_id / (time.perf_counter() - started)
                print(f"  copied {message_id:,} ({rate:,.0f}/s, load"
                      f" {os.getloadavg()[0]:.1f})", flush=True)
        if batch:
            flush()
        # OVERRIDING SYSTEM VALUE was not needed: COPY sets identity columns; move them on
        for table in ("messages", "users", "packages"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608
                         f" (SELECT max(id) FROM {table}))")
        for statement in _ROLLUPS:
            conn.execute(statement)
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(text_index)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(f"{database}: {n:,} messages in {time.perf_counter() - started:,.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    build(args.database, args.messages)


if __name__ == "__main__":
    main()
