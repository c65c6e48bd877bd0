"""``/id`` look-ups (``SqliteHistory.get``) at a large history, code trees side by side.

    .venv/bin/python bench/history_id_lookup.py \\
        --tree /work/base --db /var/tmp/bgbench/sqlite-1000000.sqlite \\
        --tree . --db /var/tmp/bgbench/sqlite-1000000-006.sqlite [--ids 300] [--passes 2]

Why: since 006 a stored msg_id is found through the Bloom filters of its runs and a
probe of each run a filter may hold it in (gateway/history/msgids.py), where before one
unique index answered. Each tree reads its own database (their schemas differ) in a
worker process of its own (``PYTHONPATH`` = the tree), read-only: the same row ids
drawn (seeded) and the same unknown ids, p50/p99 per pass (the first pass meets a
colder page cache). Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(db: Path, ids: int, passes: int, seed: int) -> None:
    from gateway.history.store import SqliteHistory

    store = SqliteHistory(db, readonly=True)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    (top,) = conn.execute("SELECT MAX(id) FROM messages").fetchone()
    rng = random.Random(seed)
    known = []
    while len(known) < ids:
        row = conn.execute("SELECT msg_id FROM messages WHERE id = ?",
                           (rng.randint(1, top),)).fetchone()
        if row:
            known.append(row[0])
    unknown = [f"2026-{uuid.UUID(int=rng.getrandbits(128), version=4)}" for _ in range(ids)]
    out = []
    for number in range(passes):
        for label, keys, stored in (("stored", known, True), ("unknown", unknown, False)):
            times = []
            for msg_id in keys:
                started = time.perf_counter()
                found = store.get(msg_id)
                times.append(time.perf_counter() - started)
                if (found is not None) != stored:
                    raise SystemExit(f"{msg_id}: found {found is not None}, want {stored}")
            times.sort()
            out.append({"pass": number + 1, "kind": label,
                        "p50": times[len(times) // 2] * 1e3,
                        "p99": times[max(0, -(-len(times) * 99 // 100) - 1)] * 1e3})
    print(json.dumps(out))
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, action="append", required=True)
    parser.add_argument("--db", type=Path, action="append", required=True,
                        help="one per --tree, in order")
    parser.add_argument("--ids", type=int, default=300)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.db[0], args.ids, args.passes, args.seed)
        return
    if len(args.db) != len(args.tree):
        parser.error("give one --db per --tree")
    print(f"/id look-ups, {args.ids} stored and {args.ids} unknown msg_ids a pass, "
          f"load {os.getloadavg()[0]:.1f}")
    for tree, db in zip(args.tree, args.db, strict=True):
        tree = tree.resolve()
        done = subprocess.run(
            [str(tree / ".venv/bin/python"), str(HERE), "--worker", "--tree", str(tree),
             "--db", str(db), "--ids", str(args.ids), "--passes", str(args.passes),
             "--seed", str(args.seed)],
            cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
            text=True, check=True)
        for row in json.loads(done.stdout):
            print(f"{tree!s:<28} {db.name:<28} pass {row['pass']} {row['kind']:<8}"
                  f" p50 {row['p50']:6.2f} ms  p99 {row['p99']:6.2f} ms")
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
