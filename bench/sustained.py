"""Sustained offered load: does the backlog stay bounded, and how fast does it drain?

An offering process spools events at a fixed rate (``--rate`` events/s, one spool
item every ``--tick`` seconds, paced on the monotonic clock, as a busy MTA or a
poller would) for ``--duration`` seconds into a real ``busgate run`` of each code
tree; a checking subscriber (each msg_id once, seq_id contiguous) receives them.
Every second the backlog (offered so far - received) is sampled. Reports per tree:
the rate actually offered, the backlog's peak, its trend over the second half of
the load (least-squares slope, events/s: "grows" above 1% of the offered rate),
its size when the load stops, and the drain time: from the end of the offered
load to the last receipt.

Usage: .venv/bin/python bench/sustained.py [--tree /work/wt-base --tree .]
       [--rate 20000] [--duration 60] [--tick 0.01] [--body small|dak] [--reps 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import bodies, harness  # noqa: E402

OFFERER = """
import json, sys, time
from gateway.spool import Spool
spool, rate, duration, tick = Spool(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), \\
    float(sys.argv[4])
body = json.dumps(json.loads(sys.stdin.readline()), separators=(",", ":"))[:-1]
head = '{"service":"bench","object":"package","event":"accept","key":"s:'
start = time.monotonic()
offered, ticks, report = 0, 0, start + 0.1
print(start, 0, flush=True)
while True:
    now = time.monotonic()
    if now - start >= duration:
        break
    due = int(min(now - start + tick, duration) * rate)
    if due > offered:
        lines = [f'{head}{n}","body":{body},"n":{n}}}}}\\n'.encode()
                 for n in range(offered, due)]
        spool.deliver("events", lines)
        offered = due
    if now >= report:
        print(now, offered, flush=True)
        report += 0.1
    ticks += 1
    time.sleep(max(0.0, start + ticks * tick - time.monotonic()))
print(time.monotonic(), offered, "end", flush=True)
"""


def sustained(tree: Path, body: dict, rate: float, duration: float,
              tick: float) -> dict[str, float | str]:
    gateway = harness.Gateway(tree)
    try:
        offerer = gateway.popen([sys.executable, "-c", OFFERER, str(gateway.settings.spool_dir),
                                 str(rate), str(duration), str(tick)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        offerer.stdin.write(json.dumps(body) + "\n")
        offerer.stdin.close()
        state = {"offered": 0, "end": None, "start": None}

        def follow() -> None:
            for line in offerer.stdout:
                parts = line.split()
                if state["start"] is None:
                    state["start"] = float(parts[0])
                state["offered"] = int(parts[1])
                if len(parts) > 2:
                    state["end"] = float(parts[0])

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        backlog: list[int] = []
        received = 0
        last = time.monotonic()
        sample_at = time.monotonic() + 1
        while True:
            for message in gateway.sub.messages(timeout=0.05):
                gateway.check.add(message.envelope, message.replayed)
                received += 1
                last = time.monotonic()
                if last >= sample_at:
                    break
            now = time.monotonic()
            if now >= sample_at:
                if state["end"] is None:  # during the load only
                    backlog.append(state["offered"] - received)
                sample_at += 1
            if state["end"] is not None and received >= state["offered"]:
                break
            if state["end"] is not None and now - state["end"] > 300:
                raise SystemExit(f"not drained 300 s after the load: {received} of "
                                 f"{state['offered']}")
        offerer.wait()
        half = backlog[len(backlog) // 2:]  # past the start-up
        slope = (statistics.linear_regression(range(len(half)), half).slope
                 if len(half) >= 2 else float("nan"))
        return {
            "offered_rate": state["offered"] / (state["end"] - state["start"]),
            "peak": max(backlog or [0]),
            "slope": slope,
            "last": backlog[-1] if backlog else 0,
            "drain": max(0.0, last - state["end"]),
            "verdict": gateway.check.verdict(),
        }
    finally:
        gateway.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path)
    parser.add_argument("--rate", type=float, default=20000)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--tick", type=float, default=0.01)
    parser.add_argument("--body", default="small", choices=sorted(bodies.BODIES))
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    body = bodies.body(args.body)
    print(f"sustained: {args.rate:,.0f} events/s offered for {args.duration:g} s, "
          f"body {args.body!r}, one spool item every {args.tick * 1000:g} ms")
    print("| tree | rep | load | offered/s | backlog peak | backlog trend, 2nd half "
          "| backlog at load end | drain after load | check |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for rep in range(1, args.reps + 1):
        for tree in trees:
            load = harness.load()
            r = sustained(tree, body, args.rate, args.duration, args.tick)
            trend = "grows" if r["slope"] > args.rate * 0.01 else "bounded"
            print(f"| {tree.name} | {rep} | {load:.2f} | {r['offered_rate']:,.0f} "
                  f"| {r['peak']:,} | {r['slope']:+,.0f}/s ({trend}) | {r['last']:,} "
                  f"| {r['drain']:.2f} s | {r['verdict']} |", flush=True)


if __name__ == "__main__":
    main()
