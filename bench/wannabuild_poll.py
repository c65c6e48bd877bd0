"""Benchmark the wanna-build poller on a 1,000,000-row ``transactions`` table.

Prints, for the real PostgreSQL on 127.0.0.1:5432 (a scratch database, dropped at
the end): poll latency and rows read for 1,000 new rows (after an idle spell, and in
steady state), an idle poll, 1,000 new rows while a transaction stays open across
polls (its rows then read by xid from the time it may have started), rows/s turned
into committed events on a 100,000-row backlog (an hour-long outage) and a
100,000-row burst, and the same 1,000-row poll without the time index.

    .venv/bin/python bench/wannabuild_poll.py [--rows 1000000] [--new 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.wannabuild.poller import WannaBuildPoller
from adapters.wannabuild.settings import WannaBuildSettings
from fixtures.wannabuild import wbdb
from gateway.event import Event
from gateway.polling import StoreView, apply
from gateway.store import EnvelopeFactory, Store

PACKAGES = 50000
FILL = """
INSERT INTO packages (architecture, package, distribution, version, state, builder, notes)
SELECT (ARRAY['amd64','arm64','i386','mips64el','s390x'])[1 + i % 5], 'pkg' || (i / 5), 'sid',
       '1.0-' || (i % 7), 'Installed', 'buildd_x', 'installed'
FROM generate_series(0, %(packages)s - 1) i;
INSERT INTO transactions (architecture, package, distribution, version, action, prevstate,
                          state, real_user, set_user, time)
SELECT (ARRAY['amd64','arm64','i386','mips64el','s390x'])[1 + j % 5],
       'pkg' || ((j % %(packages)s) / 5),
       'sid', '1.0-' || (j % 7), '--take', 'Needs-Build', 'Building', 'buildd_x', 'buildd_x',
       localtimestamp - interval '30 days' + j * (interval '25 days' / %(rows)s)
FROM generate_series(0, %(rows)s - 1) j;
"""
#: A backlog after an outage: rows spread over the last hour (older than the overlap).
BACKLOG = """
INSERT INTO transactions (architecture, package, distribution, version, action, prevstate,
                          state, real_user, set_user, time)
SELECT 'arm64', 'pkg' || (i %% 10000), 'sid', '1.0-' || (i %% 7), '--set-uploaded', 'Built',
       'Uploaded', 'buildd_y', 'buildd_y',
       localtimestamp - interval '1 hour' + i * (interval '50 minutes' / %s)
FROM generate_series(1, %s) i
"""
NEW = """
INSERT INTO transactions (architecture, package, distribution, version, action, prevstate,
                          state, real_user, set_user, time)
SELECT 'amd64', 'pkg' || (i %% 10000), 'sid', '1.0-' || (i %% 7), '--set-built', 'Building',
       'Built', 'buildd_x', 'buildd_x', localtimestamp - interval '2 seconds' + i * interval '1 us'
FROM generate_series(1, %s) i
"""



def poll_once(poller, store: Store) -> list[Event]:  # type: ignore[no-untyped-def]
    """One poll as the daemon runs it: read, then commit the result in one transaction."""
    result = poller.poll(StoreView(store))
    apply(store, result)
    return result.events

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=100_000)
    args = parser.parse_args()
    name = wbdb.unique_name("busgate_wbbench")
    dsn = wbdb.create(name)
    writer = wbdb.Writer(dsn)
    try:
        started = time.perf_counter()
        writer.execute(FILL.replace("%(packages)s", str(PACKAGES)).replace("%(rows)s",
                                                                           str(args.rows)))
        writer.execute("ANALYZE")
        print(f"filled {args.rows:,} transactions / {PACKAGES:,} packages rows in "
              f"{time.perf_counter() - started:.1f} s")
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "state.sqlite",
                          EnvelopeFactory("org.debian.dev", "bench", "bench"))
            poller = WannaBuildPoller(WannaBuildSettings(dsn=dsn))
            timed(poller, store, "first run (baseline at the newest row)")

            def new_rows(n: int) -> None:
                writer.execute(NEW % n)

            new_rows(args.new)
            timed(poller, store, f"{args.new:,} new rows after an idle spell")
            for round_ in range(1, 4):
                time.sleep(0.05)
                new_rows(args.new)
                timed(poller, store, f"{args.new:,} new rows, steady state #{round_}")
            timed(poller, store, "no new rows")
            with writer.transaction() as long_run:  # open across polls (a merge run)
                long_run.execute("SELECT now()")
                for round_ in range(1, 3):
                    time.sleep(0.05)
                    new_rows(args.new)
                    timed(poller, store, f"{args.new:,} new rows, a transaction open #{round_}")
                long_run.execute(NEW.replace("localtimestamp - interval '2 seconds' + i * "
                                             "interval '1 us'", "now()") % 1)
            timed(poller, store, "that transaction committed (its row found by xid)")

            # an outage: a poller whose cursor is 65 minutes old (a store of its own)
            writer.execute(BACKLOG % (args.backlog, args.backlog))
            outage = Store(Path(tmp) / "outage.sqlite",
                           EnvelopeFactory("org.debian.dev", "bench", "bench"))
            since = writer.execute("SELECT localtimestamp - interval '65 minutes'")[0][0]
            late = WannaBuildPoller(WannaBuildSettings(dsn=dsn, since=since.isoformat()))
            drain(late, outage, f"backlog of {args.backlog + 4 * args.new:,} rows over the "
                                f"last hour")
            late.close()
            outage.close()
            new_rows(args.backlog)
            drain(poller, store, f"burst of {args.backlog:,} rows")

            writer.execute("DROP INDEX transactions_time")
            new_rows(args.new)
            timed(poller, store, f"{args.new:,} new rows WITHOUT the time index")
            poller.close()
            store.close()
    finally:
        writer.close()
        wbdb.drop(name)
    return 0


def drain(poller: WannaBuildPoller, store: Store, label: str) -> None:
    total, polls, shipped, started = 0, 0, 0, time.perf_counter()
    while True:
        events = poll_once(poller, store)
        polls += 1
        total += len(events)
        shipped += poller.last_rows_read
        if len(events) < poller.cfg.batch_rows:
            break
    elapsed = time.perf_counter() - started
    print(f"{label}: {total:,} events committed in {polls} polls ({shipped:,} rows read), "
          f"{elapsed:.2f} s = {total / elapsed:,.0f} rows/s turned into events")


def timed(poller: WannaBuildPoller, store: Store, label: str) -> None:
    started = time.perf_counter()
    events = poll_once(poller, store)
    elapsed = time.perf_counter() - started
    rate = f", {len(events) / elapsed:,.0f} rows/s" if events else ""
    print(f"{label:58s} {elapsed * 1000:8.1f} ms  rows read {poller.last_rows_read:6,}  "
          f"events {len(events):6,}{rate}")


if __name__ == "__main__":
    raise SystemExit(main())
