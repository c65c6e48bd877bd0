"""Quick history figures at N messages (default 50,000) on SQLite: record building,
batched and per-message ingest, and /raw store queries (p50/max of 20 runs each).
The 1,000,000-message SQLite/PostgreSQL comparison of issue 14 comes later.

    .venv/bin/python bench/history_quick.py [N]

A tree whose text index is a file of its own filled by a thread (008) runs that thread
during the ingest, woken after each commit, as the recorder does; each ingest figure is
until stored and until indexed (CPU: all threads), and the queries run once indexed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from harness import wait_indexed

from gateway.history import query
from gateway.history.records import record_of
from gateway.history.store import SqliteHistory
from gateway.messages import TypeIndex

T0 = 1796083200.0
TAILS = ("dak.upload.accepted", "git.push", "debbugs.bug.open")


def envelope(i: int) -> dict:
    return {"topic": f"org.debian.dev.{TAILS[i % 3]}", "msg_id": f"2026-bench-{i}",
            "msg": {"source": f"pkg{i % 500}", "n": i, "text": f"word{i} déjà"},
            "timestamp": int(T0 + i * 60), "i": i, "username": "bench", "seq_id": i,
            "publisher": "bench",
            "headers": {f"fedora_messaging_user_user{i % 50}": True,
                        f"busgate_package_pkg{i % 500}": True}}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    index = TypeIndex(())
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteHistory(Path(tmp) / "h.sqlite")
        start_indexer = getattr(store, "start_indexer", None)
        if start_indexer is not None:
            start_indexer()
        committed = getattr(store, "committed", lambda: None)
        envelopes = [envelope(i) for i in range(1, n + 1)]
        started = time.perf_counter()
        records = [record_of(e, index) for e in envelopes]
        built, cpu = time.perf_counter(), time.process_time()
        store.add_many(records)  # (its transactions wake the indexer themselves)
        done = time.perf_counter()
        wait_indexed(store)
        print(f"record_of {n / (built - started):,.0f}/s; add_many (1000 a transaction) "
              f"{n / (done - built):,.0f}/s, until indexed "
              f"{n / (time.perf_counter() - built):,.0f}/s, "
              f"{(time.process_time() - cpu) / n * 1e6:.0f} CPU µs a message")
        db = store.writer()
        more = [record_of(envelope(i), index) for i in range(n + 1, n + 5001)]
        started, cpu = time.perf_counter(), time.process_time()
        for record in more:  # the recorder's path: one transaction per message
            db.execute("BEGIN IMMEDIATE")
            store.add(db, record)
            db.execute("COMMIT")
            committed()
        done = time.perf_counter()
        wait_indexed(store)
        print(f"one transaction per message {5000 / (done - started):,.0f}/s, until indexed "
              f"{5000 / (time.perf_counter() - started):,.0f}/s, "
              f"{(time.process_time() - cpu) / 5000 * 1e6:.0f} CPU µs a message")
        for items in ([("topic", f"org.debian.dev.{TAILS[1]}")], [("user", "user7")],
                      [("package", "pkg42")], [("contains", "word4242")],
                      [("contains", "déjà")],
                      [("start", str(T0 + 6000)), ("end", str(T0 + 12000))]):
            parsed = query.parse(items)
            times = []
            for _ in range(20):
                started = time.perf_counter()
                store.search(parsed)
                times.append(time.perf_counter() - started)
            times.sort()
            print(f"/raw {items}: p50 {times[10] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms")
        store.close()


if __name__ == "__main__":
    main()
