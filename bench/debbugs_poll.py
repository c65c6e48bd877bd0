"""Benchmark: get_status decoding speed, and SOAP calls per poll for 10,000 watched bugs.

Prints (1) bugs/s decoded from SOAP::Lite get_status responses (500 bugs each,
the shape of the captured sample) by soaplite + status.snapshot, and (2) for a
poll of 10,000 watched bugs of which 1% changed, against the local SOAP server
over real HTTP: SOAP calls, events, snapshots written and wall time.

    .venv/bin/python bench/debbugs_poll.py [--bugs 10000] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.debbugs import soaplite, status
from adapters.debbugs.poller import DebbugsPoller
from adapters.debbugs.settings import DebbugsSettings
from fixtures.debbugs.soapserver import (
    FakeDebbugs,
    make_status,
    response,
    status_map_xml,
)
from gateway.event import Event
from gateway.polling import StoreView, apply
from gateway.store import EnvelopeFactory, Store


def poll_once(poller, store: Store) -> list[Event]:  # type: ignore[no-untyped-def]
    """One poll as the daemon runs it: read, then commit the result in one transaction."""
    result = poller.poll(StoreView(store))
    apply(store, result)
    return result.events

def decode_rate(rounds: int = 20) -> float:
    statuses = {b: make_status(b, subject=f"bug {b} – ünïcode", tags="patch upstream")
                for b in range(800000, 800500)}
    payload = response("get_status", status_map_xml(statuses))
    started = time.perf_counter()
    for _ in range(rounds):
        decoded = soaplite.parse_response(payload)
        for bug, value in decoded.items():
            status.snapshot(int(bug), value)
    elapsed = time.perf_counter() - started
    print(f"get_status response: {len(payload) / 1024:.0f} KiB for 500 bugs")
    return rounds * 500 / elapsed


def poll_cost(bugs: int, changed: float) -> None:
    fake = FakeDebbugs().start()
    try:
        for bug in range(1, bugs + 1):
            fake.put(bug, package="pkg")
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "bench.sqlite", EnvelopeFactory("org.debian.dev", "b", "b"))
            poller = DebbugsPoller(DebbugsSettings(url=fake.url, packages=["pkg"],
                                                   watch_new=True, mail_grace=0))
            started = time.perf_counter()
            poll_once(poller, store)
            print(f"baseline poll: {bugs} bugs, {poller.last_calls} SOAP calls, "
                  f"{time.perf_counter() - started:.2f} s")
            step = max(1, round(1 / changed))
            for bug in range(1, bugs + 1, step):
                fake.change(bug, severity="serious", tags="patch")
            fake.calls.clear()
            started = time.perf_counter()
            events = poll_once(poller, store)
            elapsed = time.perf_counter() - started
            by_method: dict[str, int] = {}
            for method, _ in fake.calls:
                by_method[method] = by_method.get(method, 0) + 1
            print(f"poll with {changed:.0%} changed: {poller.last_calls} SOAP calls "
                  f"({', '.join(f'{m} {n}' for m, n in sorted(by_method.items()))}), "
                  f"{len(events)} events, {elapsed:.2f} s")
            fake.calls.clear()
            started = time.perf_counter()
            events = poll_once(poller, store)
            print(f"poll with nothing changed: {poller.last_calls} SOAP calls, {len(events)} "
                  f"events, {time.perf_counter() - started:.2f} s")
    finally:
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bugs", type=int, default=10000)
    parser.add_argument("--changed", type=float, default=0.01)
    args = parser.parse_args()
    print(f"decode: {decode_rate():,.0f} bugs/s (soaplite + snapshot)")
    poll_cost(args.bugs, args.changed)


if __name__ == "__main__":
    main()
