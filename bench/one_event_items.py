"""One event per spool item (the shape of the MTA pipe and the git hook), code trees
side by side.

For each repetition and each tree (interleaved), a fresh ``busgate run`` from that
tree; W writer processes each spool I one-event items with the tree's real
``Spool.deliver`` (fsync each); a live subscriber receives them all. Reports
events/s from the writers' start to the last receipt (and the writers' own spool
rate), then the bulk durable path (one ``busgate publish`` of B stdin lines, as
bench/throughput.py's durable_path), medians over the repetitions with the load.

Usage: .venv/bin/python bench/one_event_items.py [--tree /work/main --tree .]
       [--writers 4] [--items 1000] [--bulk 100000] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.throughput import make_settings  # noqa: E402
from gateway import discovery, heartbeat  # noqa: E402
from gateway.subscriber import Subscriber  # noqa: E402

WRITER = """
import json, sys, time
from gateway.spool import Spool
spool, writer, items = Spool(sys.argv[1]), sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
for n in range(items):
    record = {"service": "logger", "object": "message", "event": "log",
              "key": f"one:{writer}:{n}", "body": {"log": "x" * 150}}
    spool.deliver("events", json.dumps(record).encode() + b"\\n")
print(time.perf_counter() - start)
"""


class Gateway:
    """``busgate run`` from one code tree, in a temp dir, with a joined subscriber."""

    def __init__(self, tree: Path):
        self.root = Path(tempfile.mkdtemp(prefix="bg-one-"))
        self.settings = make_settings(self.root)  # the same gateway as bench/throughput.py's
        path = self.settings.loaded_from[0]
        self.env = {**os.environ, "BUSGATE_CONFIG": str(path), "PYTHONPATH": str(tree)}
        self.tree = tree
        log = self.root / "daemon.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run"], env=self.env,
                                         cwd=tree, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while b"publishing on" not in log.read_bytes():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"daemon did not start: {log.read_text()}")
            time.sleep(0.02)
        self.sub = Subscriber(discovery.discover(self.settings),
                              heartbeat_topic=heartbeat.topic(self.settings.topic_prefix))
        self.sub.__enter__()
        for _ in range(100):
            self.run("publish", "--message", "probe")
            if list(self.sub.messages(count=1, timeout=0.2)):
                return
        raise SystemExit("subscriber never joined")

    def run(self, *args: str, stdin: bytes = b"") -> None:
        subprocess.run([sys.executable, "-m", "gateway", *args], input=stdin, env=self.env,
                       cwd=self.tree, check=True, capture_output=True)

    def close(self) -> None:
        self.sub.__exit__(None, None, None)
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def one_event_items(tree: Path, writers: int, items: int) -> tuple[float, float]:
    """(events/s reaching the subscriber, items/s the writers spooled)."""
    gateway = Gateway(tree)
    try:
        total = writers * items
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(gateway.settings.spool_dir),
                                   str(w), str(items)], env=gateway.env, cwd=tree,
                                  stdout=subprocess.PIPE) for w in range(writers)]
        got = sum(1 for _ in gateway.sub.messages(count=total, timeout=600))
        elapsed = time.perf_counter() - start
        spooling = max(float(p.communicate()[0]) for p in procs)
    finally:
        gateway.close()
    assert got == total, f"received {got} of {total}"
    return total / elapsed, total / spooling


def bulk(tree: Path, n: int) -> float:
    gateway = Gateway(tree)
    try:
        data = "".join(f"event {i}\n" for i in range(n)).encode()
        start = time.perf_counter()
        gateway.run("publish", stdin=data)
        got = sum(1 for _ in gateway.sub.messages(count=n, timeout=600))
        elapsed = time.perf_counter() - start
    finally:
        gateway.close()
    assert got == n, f"received {got} of {n}"
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", type=Path)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--items", type=int, default=1000, help="items per writer")
    parser.add_argument("--bulk", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    results: dict[Path, dict[str, list[float]]] = {t: {"one": [], "spool": [], "bulk": []}
                                                   for t in trees}
    loads = []
    for rep in range(args.reps):
        for tree in trees:
            loads.append(os.getloadavg()[0])
            one, spooled = one_event_items(tree, args.writers, args.items)
            rate = bulk(tree, args.bulk) if args.bulk else 0.0
            for key, value in (("one", one), ("spool", spooled), ("bulk", rate)):
                results[tree][key].append(value)
            print(f"rep {rep + 1} {tree}: one-event items {one:,.0f} events/s (writers spooled "
                  f"{spooled:,.0f} items/s), bulk {rate:,.0f} events/s, load {loads[-1]:.2f}",
                  flush=True)
    print(f"\nmedians of {args.reps} interleaved repetitions, {args.writers} writers x "
          f"{args.items} one-event items, bulk {args.bulk} events; load "
          f"{min(loads):.2f}-{max(loads):.2f}, {os.cpu_count()} cores")
    base = results[trees[0]]
    for tree in trees:
        r = results[tree]
        one, spool, rate = (statistics.median(r[k]) for k in ("one", "spool", "bulk"))
        ratio = (f"  (x{one / statistics.median(base['one']):.2f} one-event, "
                 f"x{rate / statistics.median(base['bulk']):.2f} bulk vs {trees[0]})"
                 if tree != trees[0] and rate else "")
        print(f"{tree!s:<28} one-event items {one:>8,.0f} events/s  writers spooled "
              f"{spool:>8,.0f} items/s  bulk durable {rate:>8,.0f} events/s{ratio}")


if __name__ == "__main__":
    main()
