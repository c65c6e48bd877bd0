"""What each part of the PostgreSQL write path costs at 1M stored: this tree's store with
parts changed, variants side by side in one process, batches interleaved (issue 14).

    .venv/bin/python bench/history_pg_ablation.py --template pgingest_1m \\
        [--variant parts1 --variant parts2 ...] [--batches 30] [--chunk 1000]

The server: ``BUSGATE_BENCH_PG_ADMIN`` (default postgres@127.0.0.1:5432/postgres). Each
variant gets its own copy of ``--template`` (bench/history_pg_cache.py; ``CREATE
DATABASE ... TEMPLATE``, dropped at the end), migrated by this tree, then changed:

    parts1 / parts2        one transaction per batch / two (``write_parts``)
    noclean                no pending-list merge beside the writes (``clean_pending``)
    fk                     the links' foreign keys back (as before 010, NOT VALID)
    nogin                  no trigram index on messages (what it costs; not a proposal)

joined with ``+`` (``parts1+noclean+fk`` is the write path before issue 14's changes,
on 010's schema). Why one process, interleaved: the machine is shared, and only ratios
from batches taken turn about compare. Per variant: messages/s over all batches, the
median and slowest batch, client CPU (this process, all threads) and server CPU (the backends of
that database, /proc) per message, and WAL per message (the server's: other databases'
writes count too, so an upper bound); the 1-minute load at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

HERE = Path(__file__).resolve()
ADMIN = os.environ.get("BUSGATE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
#: Most variants in one run (each is a 2.6 GB copy of a million-message template).
MAX_VARIANTS = 6
_FK = ("ALTER TABLE user_messages ADD FOREIGN KEY (message_id) REFERENCES messages (id)"
       " NOT VALID, ADD FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID",
       "ALTER TABLE package_messages ADD FOREIGN KEY (message_id) REFERENCES messages (id)"
       " NOT VALID, ADD FOREIGN KEY (package_id) REFERENCES packages (id) NOT VALID")
_DDL = {"fk": _FK, "nogin": ("DROP INDEX messages_body_trgm",)}
_KW: dict[str, dict[str, Any]] = {"parts1": {"write_parts": 1}, "parts2": {"write_parts": 2},
                                  "noclean": {"clean_pending": False}}


def main() -> None:
    sys.path.insert(0, str(HERE.parent))
    import history_at_scale as scale
    from history_pg_at_scale import _server_cpu

    from gateway import config
    from gateway.consumer import Delivery
    from gateway.history.pgstore import PostgresHistory
    from gateway.history.recorder import Recorder
    from gateway.messages import TypeIndex

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", required=True, help="the 1M database (never written)")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--batches", type=int, default=30, help="batches per variant")
    parser.add_argument("--chunk", type=int, default=1000, help="messages per batch")
    parser.add_argument("--seed", type=int, default=91)
    args = parser.parse_args()
    variants = args.variant or ["parts1+noclean+fk", "parts2"]
    if len(variants) > MAX_VARIANTS:
        raise SystemExit(f"at most {MAX_VARIANTS} variants")
    for variant in variants:
        unknown = set(variant.split("+")) - set(_KW) - set(_DDL)
        if unknown:
            raise SystemExit(f"unknown: {', '.join(sorted(unknown))}")
    admin = psycopg.connect(ADMIN, autocommit=True)
    scratch = Path(tempfile.mkdtemp(prefix="bg-pg-ablation-"))
    runs: list[dict[str, Any]] = []
    try:
        for number, variant in enumerate(variants):
            name = f"bg_pg_ablation_{os.getpid()}_{number}"
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(args.template)))
            url = ADMIN.rsplit("/", 1)[0] + "/" + name
            kw: dict[str, Any] = {}
            for part in variant.split("+"):
                kw.update(_KW.get(part, {}))
            store = PostgresHistory(url, query_timeout=30.0, **kw)
            monitor = psycopg.connect(url, autocommit=True)
            for part in variant.split("+"):
                for statement in _DDL.get(part, ()):
                    monitor.execute(statement)
            state = scratch / str(number)
            state.mkdir()
            (state / "busgate.toml").write_text(f'[state]\ndir = "{state}"\n')
            recorder = Recorder(config.load(state / "busgate.toml"), store,
                                index=TypeIndex(()), endpoints=[])
            runs.append({"variant": variant, "name": name, "store": store,
                         "monitor": monitor, "recorder": recorder, "rows": [],
                         "envelopes": iter(scale._envelopes(args.chunk * args.batches,
                                                            args.seed))})
        print(f"PostgreSQL write path at {args.template}: {args.batches} batches of "
              f"{args.chunk} per variant, load {os.getloadavg()[0]:.1f}", flush=True)
        for step in range(args.batches):
            for run in runs if step % 2 == 0 else runs[::-1]:
                monitor = run["monitor"]
                chunk = [next(run["envelopes"]) for _ in range(args.chunk)]
                (lsn,) = monitor.execute("SELECT pg_current_wal_lsn()").fetchone()
                server = _server_cpu(monitor)
                wall, cpu = time.perf_counter(), time.process_time()
                for envelope in chunk:
                    run["recorder"].handle(Delivery(envelope, publisher="bench", batched=True))
                run["recorder"].flush()
                row = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                       "server": _server_cpu(monitor) - server}
                (row["wal"],) = monitor.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn",
                                                (lsn,)).fetchone()
                run["rows"].append(row)
        print(f"{'variant':<22}{'msg/s':>8}{'x':>6}{'batch ms':>10}{'max ms':>8}"
              f"{'client us':>10}{'server us':>10}{'WAL<=B':>8}")
        base = 0.0
        for run in runs:
            rows, n = run["rows"], args.chunk * len(run["rows"])
            rate = n / sum(r["wall"] for r in rows)
            base = base or rate
            print(f"{run['variant']:<22}{rate:>8,.0f}{rate / base:>6.2f}"
                  f"{statistics.median(r['wall'] for r in rows) * 1000:>10.0f}"
                  f"{max(r['wall'] for r in rows) * 1000:>8.0f}"
                  f"{sum(r['cpu'] for r in rows) / n * 1e6:>10.0f}"
                  f"{sum(r['server'] for r in rows) / n * 1e6:>10.0f}"
                  f"{sum(float(r['wal']) for r in rows) / n:>8,.0f}")
        print(f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for run in runs:
            run["store"].close()
            run["monitor"].close()
        for run in runs:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(
                sql.Identifier(run["name"])))
        admin.close()


if __name__ == "__main__":
    main()
