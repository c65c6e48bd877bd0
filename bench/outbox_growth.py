"""Outbox growth: does the commit rate hold from an empty outbox to millions of rows?

For each code tree (in a subprocess with that tree first on ``sys.path``), a fresh
state database gets ``--rows`` events through the tree's own ``Store`` and
``Transaction.add_events``, ``--batch`` events a transaction (the worker's group
commit), ~200-byte bodies, keys like the worker's (random uuid5 uids: the unique
index is a B-tree of random keys). The trees take turns, one batch each (lockstep), so
a machine whose load changes during the run slows them alike. Prints the commit rate
per window of rows, the CPU time per event, the last window against the first, the
database size on disk and bytes per event, and the bytes the filler wrote per event in
each window (``write_bytes`` of /proc/self/io: the
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
import contextlib
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
done, spent, cpu, wrote = 0, 0.0, 0.0, written()
while done < rows:
    sys.stdin.readline()  # our turn
    events = [Event("bench", "package", "accept", key=f"growth:{run}:{done + i}",
                    body={**body, "n": done + i}) for i in range(batch)]
    start, start_cpu = time.perf_counter(), time.process_time()
    with store.transaction() as tx:
        tx.add_events(events)
    if max_rows:  # as the daemon's retention task would, counted in the time
        with store.transaction() as tx:
            tx.set_cursor("publisher.sent", done + batch)
        retention.prune_once(store, kept)
    spent += time.perf_counter() - start
    cpu += time.process_time() - start_cpu
    done += batch
    if done % window == 0 or done >= rows:
        size = sum(f.stat().st_size for f in root.glob("busgate.sqlite*"))
        now = written()
        print(done, spent, size, now - wrote, cpu, flush=True)
        spent, cpu, wrote = 0.0, 0.0, now
    print(".", flush=True)
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


Window = tuple[int, float, int, float, float]  # rows, events/s, size, written/event, cpu/event


def grow(trees: list[Path], rows: int, batch: int, window: int,
         max_rows: int = 0) -> dict[Path, list[Window]]:
    """Fill one database per tree, the trees taking turns batch by batch."""
    sys.path.insert(0, str(REPO))
    from bench import bodies

    body = __import__("json").dumps(bodies.small_body())
    out: dict[Path, list[Window]] = {tree: [] for tree in trees}
    with contextlib.ExitStack() as stack:
        roots = {tree: stack.enter_context(tempfile.TemporaryDirectory(prefix="bg-growth-"))
                 for tree in trees}
        procs = {tree: subprocess.Popen(
            [sys.executable, "-c", FILLER, roots[tree], str(rows), str(batch), str(window),
             body, str(max_rows)], cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env={**os.environ, "PYTHONPATH": str(tree)}) for tree in trees}
        previous = dict.fromkeys(trees, 0)
        for _ in range(0, rows, batch):
            for tree, proc in procs.items():
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write("\n")
                proc.stdin.flush()
                while (line := proc.stdout.readline().strip()) != ".":
                    if not line:
                        raise SystemExit(f"filler failed in {tree}")
                    done, spent, size, wrote, cpu = line.split()
                    n = int(done) - previous[tree]
                    previous[tree] = int(done)
                    row = (int(done), n / float(spent), int(size), int(wrote) / n,
                           float(cpu) / n * 1e6)
                    out[tree].append(row)
                    print(f"  {tree.name}: {row[0]:>9,} rows  {row[1]:>9,.0f} events/s "
                          f"committed  {row[4]:>5.1f} µs CPU/event  {row[2] / 1e6:>7.0f} MB  "
                          f"{row[3]:>7,.0f} bytes written/event", flush=True)
        for tree, proc in procs.items():
            proc.stdin.close()  # type: ignore[union-attr]
            if proc.wait():
                raise SystemExit(f"filler failed in {tree}")
            times = subprocess.run([sys.executable, "-c", REOPEN, roots[tree]], cwd=tree,
                                   check=True, stdout=subprocess.PIPE, text=True,
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
    load = os.getloadavg()[0]
    results = grow(trees, args.rows, args.batch, args.window, args.max_rows)
    print(f"\nload average at start {load:.2f}, at end {os.getloadavg()[0]:.2f}")
    print("\n| rows | " + " | ".join(f"{t.name} events/s | {t.name} µs CPU/event | "
                                     f"{t.name} bytes written/event" for t in trees) + " |")
    print("|---:|" + "---:|" * (3 * len(trees)))
    for i, (done, *_) in enumerate(results[trees[0]]):
        print(f"| {done:,} | " + " | ".join(
            f"{results[t][i][1]:,.0f} | {results[t][i][4]:.1f} | {results[t][i][3]:,.0f}"
            for t in trees) + " |")
    print("\n| tree | first window events/s | last window events/s | last ÷ first "
          "| CPU/event last ÷ first | bytes/event on disk | on disk |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for tree in trees:
        out = results[tree]
        print(f"| {tree.name} | {out[0][1]:,.0f} | {out[-1][1]:,.0f} "
              f"| {out[-1][1] / out[0][1]:.2f} | {out[-1][4] / out[0][4]:.2f} "
              f"| {out[-1][2] / out[-1][0]:.0f} | {out[-1][2] / 1e6:,.0f} MB |")


if __name__ == "__main__":
    main()
