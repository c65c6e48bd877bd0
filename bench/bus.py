"""The bus bench: busgate code trees side by side with stock fedmsg and raw pyzmq.

For each repetition, in turn (interleaved, so a change in the machine's load hits
every column alike), and for each body (a real dak accept event's body parsed
from a fixture mail, and a ~200-byte body):

  * each tree: bulk durable path, P concurrent ``busgate publish --json-input``
    processes -> spool -> outbox -> ZeroMQ -> a checking subscriber;
  * each tree: one event per spool item from W concurrent writer processes;
  * stock fedmsg 1.1.7 publish -> tail_messages (not durable) with the same bodies;
  * raw pyzmq PUB -> SUB process, JSON encoded and decoded per message.

Ratios (busgate bulk / fedmsg, busgate bulk / pyzmq) are taken within each
repetition, then the median is printed. Latencies (p50/p99, from a
``busgate publish`` command's start and from a long-lived process's Python
``Publisher.publish`` call, to the subscriber's receipt; fedmsg long-lived
for comparison) are measured once per tree after the repetitions.

Usage: .venv/bin/python bench/bus.py [--tree /work/wt-base --tree .] [--events 100000]
       [--publishers 4] [--writers 4] [--items 1000] [--reps 3] [--bodies dak,small]
       [--latency-runs 100]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import bodies, harness  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--items", type=int, default=1000, help="one-event items per writer")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--bodies", default="dak,small")
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--no-fedmsg", action="store_true")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    names = {t: (t.name or str(t)) for t in trees}
    body_names = [b for b in args.bodies.split(",") if b]
    results: dict[tuple[str, str], list[float]] = defaultdict(list)
    loads: list[float] = []
    print(f"bus bench: {args.events} events bulk ({args.publishers} publish processes), "
          f"{args.writers} writers x {args.items} one-event items, {args.reps} reps, "
          f"{os.cpu_count()} cores", flush=True)
    for rep in range(1, args.reps + 1):
        for name in body_names:
            body = bodies.body(name)
            data = bodies.lines(body, args.events)
            loads.append(harness.load())
            line = [f"rep {rep} {name} load {loads[-1]:.2f}:"]
            bulk_rates = {}
            for tree in trees:
                rate, verdict = harness.bulk(tree, data, args.publishers)
                one, spooled, verdict_one = harness.one_event_items(tree, body, args.writers,
                                                                    args.items)
                bulk_rates[tree] = rate
                results[(name, f"bulk {names[tree]}")].append(rate)
                results[(name, f"one {names[tree]}")].append(one)
                results[(name, f"spooled {names[tree]}")].append(spooled)
                line.append(f"{names[tree]} bulk {rate:,.0f}/s [{verdict}] one-event {one:,.0f}/s"
                            f" (writers {spooled:,.0f} items/s) [{verdict_one}];")
            fed = None
            if not args.no_fedmsg:
                try:
                    fed = harness.stock_fedmsg(body, args.events)
                except Exception as exc:  # say so, do not hide it
                    line.append(f"fedmsg failed: {exc};")
            raw = harness.raw_pyzmq(body, args.events)
            results[(name, "raw")].append(raw)
            line.append(f"pyzmq {raw:,.0f}/s")
            if fed:
                results[(name, "fedmsg")].append(fed)
                line.append(f"fedmsg {fed:,.0f}/s")
            for tree in trees:
                if fed:
                    results[(name, f"x fedmsg {names[tree]}")].append(bulk_rates[tree] / fed)
                results[(name, f"x pyzmq {names[tree]}")].append(bulk_rates[tree] / raw)
            print(" ".join(line), flush=True)
    latency: dict[str, list[float]] = {}
    if args.latency_runs:
        small = bodies.body("small")
        for tree in trees:
            latency[f"`busgate publish --message` start -> receipt, {names[tree]}"] = \
                harness.command_latency(tree, max(10, args.latency_runs // 5))
            latency[f"Python Publisher.publish call -> receipt, {names[tree]}"] = \
                harness.api_latency(tree, small, args.latency_runs)
        if not args.no_fedmsg:
            try:
                latency["stock fedmsg long-lived publish -> tail (not durable)"] = \
                    harness.fedmsg_latency(small, args.latency_runs)
            except Exception as exc:
                print(f"fedmsg latency failed: {exc}")
    m = harness.median
    print(f"\nmedians of {args.reps} interleaved repetitions; load {min(loads):.2f}-"
          f"{max(loads):.2f} (1-min average), {os.cpu_count()} cores\n")
    for name in body_names:
        size = len(bodies.lines(bodies.body(name), 1)) - 1
        print(f"body {name!r} (~{size} bytes of JSON)\n")
        print("| path | events/s | ÷ stock fedmsg | ÷ raw pyzmq |")
        print("|---|---:|---:|---:|")
        for tree in trees:
            fx = results.get((name, f"x fedmsg {names[tree]}"))
            print(f"| busgate {names[tree]}: {args.publishers} `busgate publish`, durable "
                  f"| {m(results[(name, f'bulk {names[tree]}')]):,.0f} "
                  f"| {m(fx) if fx else float('nan'):.2f} "
                  f"| {m(results[(name, f'x pyzmq {names[tree]}')]):.2f} |")
        for tree in trees:
            print(f"| busgate {names[tree]}: one event per item, {args.writers} writers "
                  f"(writers spooled {m(results[(name, f'spooled {names[tree]}')]):,.0f} "
                  f"items/s) | {m(results[(name, f'one {names[tree]}')]):,.0f} | | |")
        if results.get((name, "fedmsg")):
            print(f"| stock fedmsg 1.1.7 publish -> tail (not durable) "
                  f"| {m(results[(name, 'fedmsg')]):,.0f} | | |")
        print(f"| raw pyzmq, JSON per message | {m(results[(name, 'raw')]):,.0f} | | |\n")
    if latency:
        print("| latency | p50 ms | p99 ms | runs |")
        print("|---|---:|---:|---:|")
        for what, samples in latency.items():
            print(f"| {what} | {harness.pct(samples, .5):.1f} | {harness.pct(samples, .99):.1f} "
                  f"| {len(samples)} |")


if __name__ == "__main__":
    main()
