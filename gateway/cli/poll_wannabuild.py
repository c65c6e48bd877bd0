"""``busgate poll wanna-build``: run the wanna-build poller by hand.

``--once`` runs one poll and exits (0 on success, 75 = EX_TEMPFAIL when the
database failed; nothing was committed then). Without ``--once`` it polls every
``wannabuild.interval`` seconds until interrupted, backing off (doubling, at most
``MAX_BACKOFF`` times the interval) after a failed poll; ``busgate run`` does the
same through its scheduler. ``--dsn`` overrides ``wannabuild.dsn``; ``--since``
starts this run at a timestamp whatever the cursor says (rows already in the
outbox are not published again).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

HELP = "poll the wanna-build database (build state changes)"
EX_TEMPFAIL = 75
MAX_BACKOFF = 8

log = logging.getLogger("busgate.poll.wanna-build")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # also accepted after the poller name (``busgate poll wanna-build --config X``)
    parser.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="configuration file (default: $BUSGATE_CONFIG, else the "
                             "embedded defaults)")
    parser.add_argument("--once", action="store_true", help="run one poll and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the events as JSON lines; store nothing")
    parser.add_argument("--dsn", help="libpq connection string (overrides wannabuild.dsn)")
    parser.add_argument("--since", metavar="TIMESTAMP",
                        help="start at this ISO 8601 time (no offset: the database's local "
                             "time) instead of the cursor or, on a first run, the newest row")


def run(args: argparse.Namespace) -> int:
    from adapters.wannabuild.poller import from_settings, parse_since
    from gateway import runtime
    from gateway.cli import load_settings
    from gateway.dryrun import print_events
    from gateway.errors import TransientError
    from gateway.store import EnvelopeFactory, Store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    settings = load_settings(args)
    since = parse_since(args.since, key="--since") if args.since else None
    poller = from_settings(settings, since=since, dsn=args.dsn)
    if args.dry_run and not settings.db_path.exists():
        # nothing to compare with and nothing may be written: an empty in-memory state
        store = Store(":memory:", EnvelopeFactory(settings.topic_prefix,
                                                  settings.publisher.name, settings.username))
    else:
        store = runtime.open_store(settings)
    interval = settings.wannabuild.interval
    delay = interval
    try:
        while True:
            try:
                events = poller.poll(store, dry_run=args.dry_run)
            except TransientError as exc:
                print(f"busgate: wanna-build poll failed, nothing stored: {exc}",
                      file=sys.stderr)
                if args.once:
                    return EX_TEMPFAIL
                delay = min(delay * 2, interval * MAX_BACKOFF)
            else:
                if args.dry_run:
                    print_events(events, settings.topic_prefix)
                else:
                    print(f"wanna-build: {len(events)} new events in the outbox "
                          f"({poller.last_rows_read} rows read)")
                if args.once:
                    return 0
                delay = interval
            try:
                time.sleep(delay)
            except KeyboardInterrupt:
                return 0
    finally:
        poller.close()
