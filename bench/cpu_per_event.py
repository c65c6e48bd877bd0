"""CPU time per event of each process on the durable bulk path, code trees side by side.

Wall rates swing with the machine's load; the CPU a process spends per event hardly
does. For each repetition, body and tree (interleaved): a fresh ``busgate run`` from
the tree, P concurrent ``busgate publish --json-input`` processes, and a checking
subscriber (this process, the same code for every tree). Reports, per event, the CPU
(user + system) of the publish commands, the daemon's main process (outbox ->
ZeroMQ), its spool worker (spool -> outbox), and the subscriber; medians over the
repetitions, with the wall rate and the load beside them.

Usage: .venv/bin/python bench/cpu_per_event.py [--tree /work/main --tree .]
       [--events 30000] [--publishers 4] [--reps 3] [--bodies dak,small]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import bodies, harness  # noqa: E402

PARTS = ("publish", "worker", "daemon", "subscriber")


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
    parts = [b"".join(lines[i::publishers]) for i in range(publishers)]
    gateway = harness.Gateway(tree)
    try:
        worker = spool_worker(gateway.proc.pid)
        before = (cpu_seconds(gateway.proc.pid), cpu_seconds(worker), time.process_time(),
                  resource.getrusage(resource.RUSAGE_CHILDREN))
        start = time.monotonic()
        procs = [gateway.popen([sys.executable, "-m", "gateway", "publish", "--json-input",
                                "--modname", "bench", "--topic", "package.accept"],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
                 for _ in parts]
        for proc, part in zip(procs, parts, strict=True):
            proc.stdin.write(part)
            proc.stdin.close()
        last = gateway.receive(len(lines))
        if any(proc.wait() != 0 for proc in procs):
            raise SystemExit("busgate publish failed")
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
            data = bodies.lines(bodies.body(name), args.events)
            for tree in trees:
                loads.append(harness.load())
                used, rate, verdict = measure(tree, data, args.publishers)
                for part, value in used.items():
                    results[(name, tree.name, part)].append(value)
                results[(name, tree.name, "total")].append(sum(used.values()))
                results[(name, tree.name, "rate")].append(rate)
                print(f"rep {rep} {name} {tree.name} load {loads[-1]:.2f}: {rate:,.0f}/s "
                      f"[{verdict}] " + " ".join(f"{p} {v:.1f}" for p, v in used.items()),
                      flush=True)
    m = harness.median
    print(f"\nµs of CPU per event, medians of {args.reps} interleaved repetitions; load "
          f"{min(loads):.2f}-{max(loads):.2f}, {os.cpu_count()} cores\n")
    print("| body | tree | publish cmds | spool worker | daemon main | subscriber | total "
          "| events/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, tree_name in dict.fromkeys((k[0], k[1]) for k in results):
        cells = " | ".join(f"{m(results[(name, tree_name, p)]):.1f}" for p in (*PARTS, "total"))
        print(f"| {name} | {tree_name} | {cells} | {m(results[(name, tree_name, 'rate')]):,.0f} |")


if __name__ == "__main__":
    main()
