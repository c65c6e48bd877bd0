"""CPU per received message of ``gateway.subscriber.Subscriber``, code trees side by side.

``bench/cpu_per_event.py`` runs its checking subscriber in its own process, from the
tree it is started in, so its subscriber column cannot compare trees. Here each tree's
subscriber runs in a child process (``PYTHONPATH`` = the tree) on a real SUB socket;
this process publishes the same daemon-made frames (dak or small bodies, one publisher,
seq_ids 1..N, made once by the envelope factory of the tree the bench runs from) on a
PUB socket. The child checks what it gets as the bus bench does (each ``msg_id`` once,
``seq_id`` contiguous) and reports its CPU (user + system) from the first message to the
last. Repetitions interleave the trees; medians, the ratio and the load are printed.

Usage: .venv/bin/python bench/subscriber_cpu.py --tree /work/main --tree . [--events 50000]
       [--reps 5] [--bodies dak,small]
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import bodies, harness  # noqa: E402

CHILD = """
import sys, time
from gateway.discovery import Endpoint
from gateway.subscriber import Subscriber
port, n = int(sys.argv[1]), int(sys.argv[2])
endpoint = Endpoint("bench-pub", "tcp://127.0.0.1:%d" % port, None)
with Subscriber([endpoint]) as sub:
    for _ in sub.messages(count=1):  # a probe: the SUB socket has joined
        print("joined", flush=True)
    seen, last, bad, cpu, got = set(), 0, 0, None, 0
    for message in sub.messages(timeout=600):
        envelope = message.envelope
        if "seq_id" not in envelope:  # a late probe
            continue
        if cpu is None:
            cpu = time.process_time()
        bad += envelope["msg_id"] in seen or (last and envelope["seq_id"] != last + 1)
        seen.add(envelope["msg_id"])
        last = envelope["seq_id"]
        got += 1
        if got == n:
            break
    print(got, bad, (time.process_time() - cpu) / (got - 1) * 1e6, flush=True)
"""


def frames(body: dict, n: int) -> list[tuple[bytes, bytes]]:
    """``n`` envelopes as the daemon sends them (seq_ids 1..n, one publisher)."""
    from gateway.envelope import EnvelopeFactory
    from gateway.event import Event

    factory = EnvelopeFactory("org.debian.dev", "bench-pub", "busgate")
    factory.epoch = "bench-epoch"
    out = []
    for seq in range(1, n + 1):
        event = Event("bench", "package", "accept", key=f"bench:{seq}", body={**body, "n": seq})
        topic, _, text = factory.make(event, seq, 1700000000)
        out.append((topic.encode(), text.encode()))
    return out


def measure(tree: Path, data: list[tuple[bytes, bytes]]) -> tuple[float, str]:
    """(µs of the subscriber's CPU per message, check) for one tree."""
    import zmq

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)  # queue, never drop: the child reads at its own pace
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(port), str(len(data))],
                             env=env, cwd=tree, stdout=subprocess.PIPE, text=True)
    try:
        probe = (b"org.debian.dev.bench.probe.ping",
                 b'{"i":0,"msg":{},"msg_id":"probe","timestamp":0,'
                 b'"topic":"org.debian.dev.bench.probe.ping","username":"bench"}')
        while not select.select([child.stdout], [], [], 0.05)[0]:
            pub.send_multipart(probe)
        child.stdout.readline()
        time.sleep(0.3)  # probes in flight arrive before the first message
        for item in data:
            pub.send_multipart(item)
        got, bad, cpu = child.stdout.readline().split()
        if int(got) != len(data):
            raise SystemExit(f"{tree}: received {got} of {len(data)}")
        return float(cpu), "ok" if bad == "0" else f"FAILED ({bad} duplicate or gap)"
    finally:
        child.kill()
        child.wait()
        pub.close(0)
        ctx.destroy(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--bodies", default="dak,small")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    results: dict[tuple[str, Path], list[float]] = defaultdict(list)
    ratios: dict[str, list[float]] = defaultdict(list)
    loads = []
    data = {name: frames(bodies.body(name), args.events)
            for name in args.bodies.split(",") if name}
    for rep in range(1, args.reps + 1):
        for name, items in data.items():
            loads.append(harness.load())
            line = []
            for tree in trees:
                cpu, verdict = measure(tree, items)
                results[(name, tree)].append(cpu)
                line.append(f"{tree.name} {cpu:.1f} µs [{verdict}]")
            if len(trees) > 1:
                ratios[name].append(results[(name, trees[-1])][-1] / results[(name, trees[0])][-1])
            print(f"rep {rep} {name} load {loads[-1]:.2f}: " + "; ".join(line), flush=True)
    m = harness.median
    print(f"\nsubscriber CPU µs per message, medians of {args.reps} interleaved repetitions; "
          f"load {min(loads):.2f}-{max(loads):.2f}, {os.cpu_count()} cores\n")
    print("| body | " + " | ".join(t.name for t in trees) + " | last ÷ first |")
    print("|---|" + "---:|" * (len(trees) + 1))
    for name in data:
        cells = " | ".join(f"{m(results[(name, t)]):.1f}" for t in trees)
        print(f"| {name} | {cells} | {m(ratios[name]) if ratios[name] else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
