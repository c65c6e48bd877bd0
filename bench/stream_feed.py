"""The live stream's per-poll cost on PostgreSQL, trees side by side in one run: the
feed query (``since``) at the tail (a poll that finds nothing new, the steady state),
one catching up 500 rows, and the stream's start (``last_id``/``last_position``).

    .venv/bin/python bench/stream_feed.py --tree /work/base-X --tree . [--messages 100000]

Each tree gets its own database (``busgate_bench_feed_<n>``, filled once with its own
code and kept for the next run); every repetition runs each tree's child in turn (same
load), ``--polls`` calls per figure; medians of wall and client CPU microseconds a call,
the 1-minute load per repetition, and the new/old ratios within a repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import psycopg
from gateway.history.pgstore import PostgresHistory
from gateway.history.records import record_of
from gateway.messages import TypeIndex

url, n, polls = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = PostgresHistory(url)
have = store.count()
if have < n:
    index = TypeIndex(())
    tails = ("dak.package.accept", "git.branch.update", "debbugs.bug.report")
    for first in range(have + 1, n + 1, 10_000):
        store.add_many(record_of({"topic": f"org.debian.dev.{tails[i % 3]}",
                                  "msg_id": f"2026-feed-{i}", "msg": {"n": i},
                                  "timestamp": 1.8e9 + i, "i": i, "username": "b",
                                  "seq_id": i, "publisher": "b",
                                  "headers": {f"busgate_package_p{i % 500}": True}}, index)
                       for i in range(first, min(n, first + 9_999) + 1))
new = hasattr(store, "last_position")
head = store.last_position if new else store.last_id
back = store.position_of(n - 500) if new else n - 500
feed = lambda at: store.since(at, 500)
deadline = time.monotonic() + 900  # PostgreSQL: the feed waits for older transactions
while len(feed(back)) < 500 and time.monotonic() < deadline:
    time.sleep(1)
at_tail = head()

def timed(call):
    wall, cpu = [], []
    for _ in range(polls):
        w, c = time.perf_counter(), time.process_time()
        call()
        wall.append((time.perf_counter() - w) * 1e6)
        cpu.append((time.process_time() - c) * 1e6)
    wall.sort(); cpu.sort()
    return wall[len(wall) // 2], cpu[len(cpu) // 2]

assert len(feed(back)) == 500 and feed(at_tail) == []
out = {"tail poll": timed(lambda: feed(at_tail)), "catch-up 500": timed(lambda: feed(back)),
       "stream start": timed(head)}
store.close()
print(json.dumps(out))
"""


def load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, type=Path)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--polls", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    import psycopg

    urls = []
    for number, _ in enumerate(args.tree):
        name = f"busgate_bench_feed_{number}"
        with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(f"{args.pg}/{name}", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        urls.append(f"{args.pg}/{name}")
    results: list[list[dict[str, list[float]]]] = [[] for _ in args.tree]
    loads = []
    for rep in range(args.repeat):
        loads.append(load())
        for number, tree in enumerate(args.tree):
            python = tree.resolve() / ".venv" / "bin" / "python"
            done = subprocess.run([str(python), "-c", CHILD, str(tree.resolve()), urls[number],
                                   str(args.messages), str(args.polls)],
                                  capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{tree}: {done.stderr[-2000:]}")
            results[number].append(json.loads(done.stdout))
        print(f"repetition {rep + 1}/{args.repeat}: load {loads[-1]:.2f}", flush=True)
    print(f"\n{args.messages:,} messages, {args.polls} calls a figure, median of "
          f"{args.repeat} repetitions; load {min(loads):.1f}-{max(loads):.1f}")
    for figure in results[0][0]:
        cells = []
        for number, tree in enumerate(args.tree):
            wall = statistics.median(r[figure][0] for r in results[number])
            cpu = statistics.median(r[figure][1] for r in results[number])
            cells.append(f"{tree}: {wall:7.0f} us wall, {cpu:6.0f} us CPU")
        line = f"{figure:13} " + " | ".join(cells)
        if len(args.tree) == 2:
            ratio = statistics.median(b[figure][0] / a[figure][0]
                                      for a, b in zip(*results, strict=True))
            line += f" | ratio {ratio:.2f}"
        print(line)


if __name__ == "__main__":
    main()
