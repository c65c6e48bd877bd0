"""CPU time per event of each process on the durable bulk path, code trees side by side.

Wall rates swing with the machine's load; the CPU a process spends per event hardly
does. For each repetition, body and tree (interleaved): a fresh ``busgate run`` from
the tree, P concurrent ``busgate publish --json-input`` processes, and a checking
subscriber (this process, the same code for every tree). Reports, per event, the CPU
(user + system) of the publish commands, the daemon's main process (outbox ->
ZeroMQ), its spool worker (spool -> outbox), and the subscriber; medians over the
repetitions, with the wall rate and the load beside them.

In the same interleaved loop, stock fedmsg 1.1.7 (publish -> tail_messages) and raw
pyzmq (a PUB child encoding JSON per message, a SUB child decoding it) are measured
the same way: each child's CPU from /proc around the timed part only (after start-up
and the join probes), so issue 16's gap to fedmsg is stated in the same unit. The
ratio busgate / fedmsg is taken per repetition (same load), and the CPU per event
that 1.5x fedmsg's wall rate allows on this machine's cores is
``os.cpu_count() / (1.5 x fedmsg rate)`` from the same repetition.

Usage: .venv/bin/python bench/cpu_per_event.py [--tree /work/main --tree .]
       [--events 30000] [--publishers 4] [--reps 3] [--bodies dak,small]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import bodies, harness  # noqa: E402

PARTS = ("publish", "worker", "daemon", "subscriber")
FEDMSG, PYZMQ = "stock fedmsg 1.1.7", "raw pyzmq"
PAIRS: dict[str, type[harness._Pair]] = {FEDMSG: harness._Fedmsg, PYZMQ: harness._RawPyzmq}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spool_worker(daemon_pid: int) -> int:
    """The daemon's spool worker: its child started by multiprocessing's spawn."""
    for task in os.listdir(f"/proc/{daemon_pid}/task"):
        with open(f"/proc/{daemon_pid}/task/{task}/children") as children:
            for pid in children.read().split():
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    if b"spawn_main" in cmdline.read():
                        return int(pid)
    raise SystemExit("the daemon has no spool worker")


def measure(tree: Path, data: bytes, publishers: int) -> tuple[dict[str, float], float, str]:
    """(µs of CPU per event by process, events/s, check) for one bulk run."""
    lines = data.splitlines(keepends=True)
    gateway = harness.Gateway(tree)
    try:
        worker = spool_worker(gateway.proc.pid)
        before = (cpu_seconds(gateway.proc.pid), cpu_seconds(worker), time.process_time(),
                  resource.getrusage(resource.RUSAGE_CHILDREN))
        start = time.monotonic()
        last = harness.publish_bulk(gateway, lines, publishers)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        n = len(lines) / 1e6
        used = {
            "publish": (children.ru_utime + children.ru_stime - before[3].ru_utime
                        - before[3].ru_stime) / n,
            "worker": (cpu_seconds(worker) - before[1]) / n,
            "daemon": (cpu_seconds(gateway.proc.pid) - before[0]) / n,
            "subscriber": (time.process_time() - before[2]) / n,
        }
        return used, len(lines) / (last - start), gateway.check.verdict()
    finally:
        gateway.close()


def measure_pair(kind: type[harness._Pair], body: dict[str, Any],
                 n: int) -> tuple[dict[str, float], float]:
    """(µs of CPU per event of the publisher and the consumer child, events/s) for one
    run of a non-durable publisher -> consumer pair; CPU read from /proc around the
    timed part only."""
    run = kind(body, n)
    try:
        before = (cpu_seconds(run.pub.pid), cpu_seconds(run.con.pid))
        start = time.monotonic()
        run.go()
        last = run.finish(n)
        used = {"publish": (cpu_seconds(run.pub.pid) - before[0]) / (n / 1e6),
                "subscriber": (cpu_seconds(run.con.pid) - before[1]) / (n / 1e6)}
        return used, n / (last - start)
    finally:
        run.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--bodies", default="dak,small")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    results: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    loads: list[float] = []
    for rep in range(1, args.reps + 1):
        for name in [b for b in args.bodies.split(",") if b]:
            body = bodies.body(name)
            data = bodies.lines(body, args.events)
            for label, kind in PAIRS.items():
                loads.append(harness.load())
                used, rate = measure_pair(kind, body, args.events)
                for part, value in used.items():
                    results[(name, label, part)].append(value)
                results[(name, label, "total")].append(sum(used.values()))
                results[(name, label, "rate")].append(rate)
                print(f"rep {rep} {name} {label} load {loads[-1]:.2f}: {rate:,.0f}/s "
                      + " ".join(f"{p} {v:.1f}" for p, v in used.items()), flush=True)
            fedmsg_rate = results[(name, FEDMSG, "rate")][-1]
            results[(name, "budget", "total")].append(
                os.cpu_count() / (1.5 * fedmsg_rate) * 1e6)
            for tree in trees:
                loads.append(harness.load())
                used, rate, verdict = measure(tree, data, args.publishers)
                for part, value in used.items():
                    results[(name, tree.name, part)].append(value)
                results[(name, tree.name, "total")].append(sum(used.values()))
                results[(name, tree.name, "rate")].append(rate)
                results[(name, tree.name, "x fedmsg")].append(
                    sum(used.values()) / results[(name, FEDMSG, "total")][-1])
                results[(name, tree.name, "x fedmsg rate")].append(rate / fedmsg_rate)
                print(f"rep {rep} {name} {tree.name} load {loads[-1]:.2f}: {rate:,.0f}/s "
                      f"[{verdict}] " + " ".join(f"{p} {v:.1f}" for p, v in used.items()),
                      flush=True)
    m = harness.median
    print(f"\nµs of CPU per event, medians of {args.reps} interleaved repetitions; load "
          f"{min(loads):.2f}-{max(loads):.2f}, {os.cpu_count()} cores\n")
    print("| body | run | publish cmds / publisher | spool worker | daemon main "
          "| subscriber / consumer | total | events/s | CPU x fedmsg | rate x fedmsg |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, run in dict.fromkeys((k[0], k[1]) for k in results):
        if run == "budget":
            continue
        cells = " | ".join(f"{m(results[(name, run, p)]):.1f}" if results[(name, run, p)]
                           else "-" for p in (*PARTS, "total"))
        ratios = " | ".join(f"{m(results[(name, run, r)]):.2f}" if results[(name, run, r)]
                            else "-" for r in ("x fedmsg", "x fedmsg rate"))
        print(f"| {name} | {run} | {cells} | {m(results[(name, run, 'rate')]):,.0f} "
              f"| {ratios} |")
    print()
    for name in dict.fromkeys(k[0] for k in results):
        budget = results[(name, "budget", "total")]
        print(f"{name}: 1.5x stock fedmsg's wall rate on {os.cpu_count()} cores allows "
              f"{m(budget):.1f} µs of CPU per event (median; per repetition "
              f"{', '.join(f'{b:.1f}' for b in budget)}), all processes together")


if __name__ == "__main__":
    main()
