"""PostgreSQL ``name_activity`` (the chart of /user/NAME, /package/NAME) at a million
stored messages, trees side by side.

    .venv/bin/python bench/history_pg_name_activity.py --template busgate_bench_history \\
        --tree /work/main --tree . [--runs 200]

The server: ``BUSGATE_BENCH_PG_ADMIN`` (default postgres@127.0.0.1:5432/postgres).
Each tree gets its own copy of ``--template`` (``STRATEGY FILE_COPY``; dropped at the
end; the template is never written) and a worker process running that tree's code,
which opens it with that tree's store (its migrations applied and timed). Cases: the
most frequent user and package (the template's rollups) over the last day (hourly
buckets), week and month (daily buckets, as the dashboard asks) of the history. Runs
alternate between trees in blocks, so both see the same load; the answers of every
tree must be equal (the first tree's is the reference). Two phases: as opened (a
migration's rewritten rows not yet vacuumed: what the first hours after an upgrade
read), then after ``VACUUM ANALYZE`` of every copy. p50/p99 in ms, warm (one untimed
call first), with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from history_pg_at_scale import end_workers

HERE = Path(__file__).resolve()
ADMIN = os.environ.get("BUSGATE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
DAY = 86400
#: Calls timed per request to a worker (blocks alternate between the trees).
BLOCK = 20


def worker(url: str) -> None:
    """Runs in a tree; answers one JSON case per stdin line with the times and answer."""
    import gateway
    from gateway.history.pgstore import PostgresHistory

    started = time.perf_counter()
    store = PostgresHistory(url, query_timeout=30.0)
    print(json.dumps({"migrated": time.perf_counter() - started,
                      "gateway": str(Path(gateway.__file__).parent)}), flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        args = (case["kind"], case["name"], case["start"], case["end"], case["bucket"])
        answer = store.name_activity(*args)  # warm, and the answer compared
        times = []
        for _ in range(case["runs"]):
            t = time.perf_counter()
            store.name_activity(*args)
            times.append((time.perf_counter() - t) * 1000)
        print(json.dumps({"times": times, "answer": answer}), flush=True)
    store.close()


def cases(url: str) -> list[dict[str, Any]]:
    """The busiest user and package over the history's last day, week and month."""
    import psycopg

    with psycopg.connect(url) as conn:
        (last,) = conn.execute("SELECT MAX(timestamp) FROM messages").fetchone()
        top = {kind: conn.execute(
            f"SELECT t.name FROM stats_{kind[:-1]}_days s JOIN {kind} t"  # noqa: S608
            f" ON t.id = s.{kind[:-1]}_id GROUP BY t.name ORDER BY SUM(s.messages) DESC"
            " LIMIT 1").fetchone()[0] for kind in ("users", "packages")}
    end_day = dt.datetime.fromtimestamp(last, dt.UTC).replace(
        hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    month = end_day.replace(day=1) if end_day.day > 1 else \
        (end_day - dt.timedelta(days=1)).replace(day=1)
    end = end_day.timestamp()
    spans = {"day": (end - DAY, 3600), "week": (end - 7 * DAY, DAY),
             "month": (month.timestamp(), DAY)}
    return [{"kind": kind, "name": name, "span": span, "start": start, "end": end,
             "bucket": bucket} for kind, name in top.items()
            for span, (start, bucket) in spans.items()]


def main() -> None:
    import psycopg
    from psycopg import sql

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", required=True, help="the 1M database (never written)")
    parser.add_argument("--tree", action="append", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=200, help="timed calls per case per tree")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    names = [f"bg_name_activity_{os.getpid()}_{i}" for i in range(len(args.tree))]
    base = ADMIN.rsplit("/", 1)[0] + "/"
    workers: list[subprocess.Popen[str]] = []
    admin = psycopg.connect(ADMIN, autocommit=True)
    try:
        for tree, name in zip(args.tree, names, strict=True):
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(args.template)))
            tree = tree.resolve()
            workers.append(subprocess.Popen(
                [str(tree / ".venv/bin/python"), str(HERE), "--worker", base + name,
                 "--template", args.template, "--tree", str(tree)],
                cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for tree, proc in zip(args.tree, workers, strict=True):
            hello = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            print(f"{tree}: gateway from {hello['gateway']}, opened (migrations) in "
                  f"{hello['migrated']:.2f} s", flush=True)
        todo = cases(base + names[0])

        def ask(index: int, case: dict[str, Any], runs: int) -> dict[str, Any]:
            proc = workers[index]
            proc.stdin.write(json.dumps({**case, "runs": runs}) + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            return json.loads(proc.stdout.readline())  # type: ignore[union-attr]

        for phase in ("as opened", "after VACUUM ANALYZE"):
            if phase.startswith("after"):
                for name in names:
                    with psycopg.connect(base + name, autocommit=True) as conn:
                        conn.execute("VACUUM ANALYZE")
            print(f"\nname_activity {phase}, {args.runs} calls per case (ms, p50 / p99),"
                  f" load {os.getloadavg()[0]:.1f}")
            print(f"{'case':<34}" + "".join(f"{str(t)[-20:]:>22}" for t in args.tree)
                  + "   p50 ratio")
            for case in todo:
                times: list[list[float]] = [[] for _ in workers]
                for block in range(0, args.runs, BLOCK):
                    order = list(range(len(workers)))
                    if (block // BLOCK) % 2:
                        order.reverse()
                    for index in order:
                        reply = ask(index, case, min(BLOCK, args.runs - block))
                        times[index] += reply["times"]
                        if index == 0:
                            reference = reply["answer"]
                        elif reply["answer"] != reference:
                            raise SystemExit(f"{args.tree[index]} answers {case} differently")
                p50 = [statistics.median(t) for t in times]
                p99 = [statistics.quantiles(t, n=100)[98] for t in times]
                label = f"{case['kind']} {case['name']} {case['span']}"
                print(f"{label[:33]:<34}" + "".join(f"{a:>13.1f} / {b:>6.1f}"
                                                    for a, b in zip(p50, p99, strict=True))
                      + "".join(f"   x{p / p50[0]:.2f}" for p in p50[1:]), flush=True)
            print(f"load {os.getloadavg()[0]:.1f}")
    finally:
        end_workers(workers, admin, names)


if __name__ == "__main__":
    main()
