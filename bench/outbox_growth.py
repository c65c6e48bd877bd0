"""Outbox growth: does the commit rate hold from an empty outbox to millions of rows?

For each code tree (in a subprocess with that tree first on ``sys.path``), a fresh
state database gets ``--rows`` events through the tree's own ``Store`` and
``Transaction.add_events``, ``--batch`` events a transaction (the worker's group
commit), ~200-byte bodies, keys like the worker's (random uuid5 uids: the unique
index is a B-tree of random keys). Prints the commit rate per window of rows, the
last window against the first, the database size on disk and bytes per event, and the
bytes the filler wrote per event in each window (``write_bytes`` of /proc/self/io: the
WAL and checkpoints; random index pages show up here first).

At the end the full database is opened again in a new process (as ``busgate status`` or
a restarted daemon would): the seconds to open it, to read its status and to commit one
more event are printed (a full scan at open would show here).

With ``--max-rows N`` each transaction is followed by a retention pass (as if
everything was published), pruning to the newest N rows: the cost of pruning is
counted in the commit rate.

Usage: .venv/bin/python bench/outbox_growth.py [--tree /work/wt-base --tree .]
       [--rows 3000000] [--batch 5000] [--window 250000] [--max-rows N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FILLER = r"""
import json, os, sys, time, uuid
from pathlib import Path
from gateway import config, runtime
from gateway.event import Event
root, rows, batch, window = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
max_rows = int(sys.argv[6])
settings = config.Settings(state=config.StateSettings(dir=str(root)))
if max_rows:
    from gateway import retention
    kept = config.StateSettings(dir=str(root), outbox_max_rows=max_rows)
store = runtime.open_store(settings)
body = json.loads(sys.argv[5])
run = uuid.uuid4().hex
def written():
    with open("/proc/self/io") as io:
        return next(int(l.split()[1]) for l in io if l.startswith("write_bytes"))
done, spent, wrote = 0, 0.0, written()
while done < rows:
    events = [Event("bench", "package", "accept", key=f"growth:{run}:{done + i}",
                    body={**body, "n": done + i}) for i in range(batch)]
    start = time.perf_counter()
    with store.transaction() as tx:
        tx.add_events(events)
    if max_rows:  # as the daemon's retention task would, counted in the time
        with store.transaction() as tx:
            tx.set_cursor("publisher.sent", done + batch)
        retention.prune_once(store, kept)
    spent += time.perf_counter() - start
    done += batch
    if done % window == 0 or done >= rows:
        size = sum(f.stat().st_size for f in root.glob("busgate.sqlite*"))
        now = written()
        print(done, spent, size, now - wrote, flush=True)
        spent, wrote = 0.0, now
store.close()
"""

REOPEN = r"""
import sys, time
from gateway import config, runtime
from gateway.event import Event
settings = config.Settings(state=config.StateSettings(dir=sys.argv[1]))
start = time.perf_counter()
store = runtime.open_store(settings)
opened = time.perf_counter()
store.status()
status = time.perf_counter()
with store.transaction() as tx:
    tx.add_events([Event("bench", "package", "accept", key="reopen", body={})])
print(f"{opened - start:.3f} {status - opened:.3f} {time.perf_counter() - status:.3f}")
"""


def grow(tree: Path, rows: int, batch: int, window: int,
         max_rows: int = 0) -> list[tuple[int, float, int, float]]:
    sys.path.insert(0, str(REPO))
    from bench import bodies

    body = __import__("json").dumps(bodies.small_body())
    with tempfile.TemporaryDirectory(prefix="bg-growth-") as root:
        proc = subprocess.Popen([sys.executable, "-c", FILLER, root, str(rows), str(batch),
                                 str(window), body, str(max_rows)], cwd=tree,
                                stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(tree)})
        out = []
        previous = 0
        for line in proc.stdout:
            done, spent, size, wrote = line.split()
            rate = (int(done) - previous) / float(spent)
            per = int(wrote) / (int(done) - previous)
            previous = int(done)
            out.append((int(done), rate, int(size), per))
            print(f"  {tree.name}: {int(done):>9,} rows  {rate:>9,.0f} events/s committed  "
                  f"{int(size) / 1e6:>7.0f} MB  {per:>7,.0f} bytes written/event", flush=True)
        if proc.wait():
            raise SystemExit(f"filler failed in {tree}")
        times = subprocess.run([sys.executable, "-c", REOPEN, root], cwd=tree, check=True,
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(tree)}).stdout.split()
        print(f"  {tree.name}: reopened: open {times[0]} s, status {times[1]} s, "
              f"first commit {times[2]} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--window", type=int, default=250_000)
    parser.add_argument("--max-rows", type=int, default=0,
                        help="outbox retention (state.outbox_max_rows) in trees that have it")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    summary = []
    for tree in trees:
        load = os.getloadavg()[0]
        out = grow(tree, args.rows, args.batch, args.window, args.max_rows)
        first, last = out[0][1], out[-1][1]
        summary.append((tree.name, load, first, last, out[-1][2] / out[-1][0], out[-1][2],
                        out[0][3], out[-1][3]))
    print("\n| tree | load at start | first window events/s | last window events/s "
          "| last ÷ first | written/event first → last | bytes/event | on disk |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, load, first, last, per, size, w0, w1 in summary:
        print(f"| {name} | {load:.2f} | {first:,.0f} | {last:,.0f} | {last / first:.2f} "
              f"| {w0:,.0f} → {w1:,.0f} | {per:.0f} | {size / 1e6:,.0f} MB |")


if __name__ == "__main__":
    main()
