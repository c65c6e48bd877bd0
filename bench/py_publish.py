"""The Python publish API (gateway.api) from a long-lived process.

Prints, in one run on this machine:
  * one ``Publisher.publish`` call (validate, one fsync'd spool item): p50/p99 latency;
  * bulk: ``publish_many`` of B events in one item (events/s), and single calls in a loop (calls/s);
  * publish -> receipt through a real ``busgate run`` and a live subscriber: p50/p99.

Usage: .venv/bin/python bench/py_publish.py [--calls N] [--batch B] [--runs R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from harness import pct  # noqa: E402
from throughput import make_settings, start_daemon, subscribe  # noqa: E402

from gateway import api, runtime  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--batch", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp))
        store = runtime.open_store(settings)
        spool = runtime.open_spool(settings)
        spool.ensure()
        runtime.adopt(settings, store, spool)
        store.close()
        publisher = api.Publisher(settings, modname="bench")
        body = {"package": "hebcal", "version": "4.31-1", "suite": "unstable"}
        times = []
        for i in range(args.calls):
            t0 = time.perf_counter()
            publisher.publish("package.accept", {**body, "i": i})
            times.append(time.perf_counter() - t0)
        total = sum(times)
        print(f"one call (validate + fsync'd spool item): p50 {pct(times, .5) * 1000:.2f} ms, "
              f"p99 {pct(times, .99) * 1000:.2f} ms; {args.calls / total:.0f} calls/s in a loop")
        t0 = time.perf_counter()
        publisher.publish_many({"topic": "package.accept", "msg": {**body, "i": i}}
                               for i in range(args.batch))
        elapsed = time.perf_counter() - t0
        print(f"publish_many of {args.batch} events (one item): {elapsed * 1000:.0f} ms, "
              f"{args.batch / elapsed:.0f} events/s")
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp))
        proc = start_daemon(settings)
        try:
            publisher = api.Publisher(settings, modname="bench")
            with subscribe(settings) as sub:
                for _ in range(50):  # until the subscriber is joined
                    publisher.publish("probe.ping", {})
                    if list(sub.messages(count=1, timeout=0.2)):
                        break
                list(sub.messages(timeout=0.5))
                lat = []
                for i in range(args.runs):
                    t0 = time.perf_counter()
                    mid = publisher.publish("package.accept", {**body, "i": i})
                    (got,) = list(sub.messages(count=1, timeout=10))
                    assert got.envelope["msg_id"] == mid
                    lat.append(time.perf_counter() - t0)
            print(f"publish -> receipt through busgate run ({args.runs} runs): "
                  f"p50 {pct(lat, .5) * 1000:.1f} ms, p99 {pct(lat, .99) * 1000:.1f} ms")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
