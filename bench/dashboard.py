"""Dashboard figures: ``/`` and the other pages at a small and a large history, side by
side in one run (so the ratio shows what size costs on a loaded machine), and the
ingest cost of the activity rollup trigger (batched add_many with and without it).

    .venv/bin/python bench/dashboard.py [LARGE [SMALL]]     # default 1000000 10000

Each page is fetched over HTTP from a real uvicorn 20 times after one warm-up fetch
(p50 and max, ms).
Messages are spread over the last 30 days so the week and day charts have data.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from gateway.history.records import record_of
from gateway.history.store import SqliteHistory
from gateway.history.web import make_app
from gateway.messages import TypeIndex

TAILS = ("dak.package.accept", "git.branch.update", "debbugs.bug.report",
         "wanna-build.build.built")
SPAN = 30 * 86400
PAGES = ("/", "/?package=pkg42", "/?category=git&user=user7", "/package/pkg42",
         "/user/user7")


def envelope(i: int, n: int, now: float) -> dict:
    return {"topic": f"org.debian.dev.{TAILS[i % 4]}", "msg_id": f"2026-dash-{i}",
            "msg": {"source": f"pkg{i % 5000}", "n": i, "title": f"word{i} déjà"},
            "timestamp": int(now - SPAN + i * SPAN / n), "i": i, "username": "bench",
            "seq_id": i, "publisher": "bench",
            "headers": {f"fedora_messaging_user_user{i % 300}": True,
                        f"busgate_package_pkg{i % 5000}": True}}


def fill(path: Path, n: int, now: float, *, trigger: bool = True) -> tuple[SqliteHistory,
                                                                             float]:
    store = SqliteHistory(path)
    if not trigger:
        store.writer().execute("DROP TRIGGER messages_activity_add")
    index = TypeIndex(())
    took = 0.0
    for first in range(1, n + 1, 50_000):
        records = [record_of(envelope(i, n, now), index)
                   for i in range(first, min(n, first + 49_999) + 1)]
        started = time.perf_counter()
        store.add_many(records)
        took += time.perf_counter() - started
    return store, n / took


def timings(store: SqliteHistory) -> dict[str, tuple[float, float]]:
    server = uvicorn.Server(uvicorn.Config(make_app(store), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    out = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as web:
        for page in PAGES:
            web.get(page)  # warm: templates compiled, pages of the file cached
            times = []
            for _ in range(20):
                started = time.perf_counter()
                answer = web.get(page)
                times.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200, (page, answer.status_code)
            out[page] = (statistics.median(times), max(times))
    server.should_exit = True
    thread.join(10)
    return out


def main() -> None:
    large = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    small = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        rates: dict[bool, float] = {True: 0.0, False: 0.0}
        for turn in range(4):  # alternated, best of two each: the machine is shared
            trigger = turn % 2 == 0
            store, rate = fill(Path(tmp) / f"t{turn}.sqlite", 50_000, now, trigger=trigger)
            store.close()
            rates[trigger] = max(rates[trigger], rate)
        print(f"add_many at 50,000: {rates[True]:,.0f}/s with the rollup trigger, "
              f"{rates[False]:,.0f}/s without (ratio {rates[True] / rates[False]:.2f})")
        results = {}
        for n in (small, large):
            started = time.perf_counter()
            store, _ = fill(Path(tmp) / f"h{n}.sqlite", n, now)
            print(f"filled {n:,} messages in {time.perf_counter() - started:.0f} s")
            results[n] = timings(store)
            store.close()
        print(f"{'page':28} {small:>10,} p50/max ms {large:>10,} p50/max ms   ratio p50")
        for page in PAGES:
            (a, amax), (b, bmax) = results[small][page], results[large][page]
            print(f"{page:28} {a:8.1f} /{amax:6.1f}     {b:8.1f} /{bmax:6.1f}       "
                  f"{b / a:5.2f}")


if __name__ == "__main__":
    main()
