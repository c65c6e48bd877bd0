"""``busgate poll wanna-build``: run the wanna-build poller by hand.

``--once`` runs one poll and exits (0 on success, 75 = EX_TEMPFAIL when the
database failed; nothing was committed then). Without ``--once`` it polls every
``wannabuild.interval`` seconds until interrupted, backing off after a failed
poll by the rule ``busgate run``'s scheduler follows (:mod:`gateway.backoff`).
``--dsn`` overrides ``wannabuild.dsn``; ``--since`` starts this run at a
timestamp whatever the cursor says (rows already in the outbox are not
published again).
"""

from __future__ import annotations

import argparse

HELP = "poll the wanna-build database (build state changes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", help="libpq connection string (overrides wannabuild.dsn)")
    parser.add_argument("--since", metavar="TIMESTAMP",
                        help="start at this ISO 8601 time (no offset: the database's local "
                             "time) instead of the cursor or, on a first run, the newest row")


def run(args: argparse.Namespace) -> int:
    from adapters.wannabuild.poller import from_settings, parse_since
    from gateway.cli import load_settings
    from gateway.cli.poll import loop, open_store

    settings = load_settings(args)
    since = parse_since(args.since, key="--since") if args.since else None
    poller = from_settings(settings, None, since=since, dsn=args.dsn)
    store = open_store(settings, args.dry_run)
    try:
        return loop(poller, store, settings, once=args.once, dry_run=args.dry_run,
                    interval=settings.wannabuild.interval)
    finally:
        poller.close()
