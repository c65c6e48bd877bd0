"""``busgate poll NAME``: run one source's poller by hand.

The pollers are the registry's (every source with a ``PollerSpec``). Each gets the
common options (``--once``, ``--dry-run``, ``--config``) and its own (the spec's
``add_arguments``), which override its configuration table. ``--once`` runs one
poll and exits (0 on success, 75 = EX_TEMPFAIL when the source failed; nothing was
committed then). Without ``--once`` it polls every ``interval`` seconds of the
source's table until interrupted, backing off after a failed poll by the rule of
:mod:`gateway.backoff`, as ``busgate run``'s scheduler does.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.polling import Poller
    from gateway.store import Store

HELP = "run a source's poller by hand"
EX_TEMPFAIL = 75


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gateway import sources

    polled = sources.pollers()
    parser.description = (f"{HELP} ({', '.join(s.name for s in polled) or 'none registered'})")
    sub = parser.add_subparsers(dest="poller", metavar="POLLER", required=True)
    for source in polled:
        spec = source.poller
        assert spec is not None
        text = spec.help or source.description
        command = sub.add_parser(source.name, help=text, description=text)
        # also accepted after the poller name (``busgate poll wanna-build --config X``)
        command.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                             help="configuration file (default: $BUSGATE_CONFIG, else the "
                                  "embedded defaults)")
        command.add_argument("--once", action="store_true", help="run one poll and exit")
        command.add_argument("--dry-run", action="store_true",
                             help="print the events as JSON lines; store nothing")
        if spec.add_arguments:
            sources.resolve(spec.add_arguments)(command)


def run(args: argparse.Namespace) -> int:
    import sys

    from gateway import pollers
    from gateway.cli import load_settings
    from gateway.errors import StoreError

    settings = load_settings(args)
    poller = pollers.make(args.poller, settings, args)  # refuses a bad option: exit 2
    try:
        store = open_store(settings, args.dry_run)
        return loop(poller, store, settings, once=args.once, dry_run=args.dry_run,
                    interval=pollers.interval(args.poller, settings))
    except StoreError as exc:  # no daemon's state here, or the state failed: poll later
        print(f"busgate poll: {exc}; nothing stored", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        close = getattr(poller, "close", None)
        if close is not None:
            close()


def open_store(settings: Settings, dry_run: bool) -> Store:
    """The daemon's state store, or an empty in-memory one for a dry run with no state
    yet (nothing to compare with, and nothing may be written). Raises
    :class:`~gateway.errors.StoreError` where no daemon marked the state directory."""
    from gateway import runtime
    from gateway.store import EnvelopeFactory, Store

    if dry_run and not settings.db_path.exists():
        return Store(":memory:", EnvelopeFactory(settings.topic_prefix,
                                                 settings.publisher.name, settings.username,
                                                 index=runtime.type_index(settings)))
    return runtime.open_daemon_store(settings)  # never events where no daemon publishes


def loop(poller: Poller, store: Store, settings: Settings, *, once: bool, dry_run: bool,
         interval: float) -> int:
    """Poll once (``--once``: exit 0, or 75 when the source failed and nothing was stored)
    or every ``interval`` seconds until interrupted, backing off after a failure by the
    rule the daemon's scheduler follows (:mod:`gateway.backoff`). Each poll's result is
    committed in one transaction (:func:`gateway.polling.apply`); ``--dry-run`` prints
    its events and commits nothing."""
    import logging
    import sys
    import time

    from gateway import backoff
    from gateway.dryrun import print_events
    from gateway.errors import TransientError
    from gateway.ingest import check_events
    from gateway.polling import StoreView, apply

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    failures = 0
    while True:
        try:
            result = poller.poll(StoreView(store))
            added = [] if dry_run else apply(store, result, settings.quarantine)
        except KeyboardInterrupt:
            return 130
        except TransientError as exc:
            print(f"busgate: {poller.name} poll failed, nothing stored: {exc}",
                  file=sys.stderr)
            if once:
                return EX_TEMPFAIL
            failures += 1
        else:
            if dry_run:
                valid, invalid = check_events(result.events, store.factory.index)
                print_events(valid, settings.topic_prefix)
                for number, event, why in invalid:
                    print(f"busgate: event {number} ({event.key}) would be quarantined as "
                          f"invalid: {why}", file=sys.stderr)
                if result.summary:
                    print(f"busgate: {poller.name} dry run, nothing stored: {result.summary}",
                          file=sys.stderr)
            else:
                print(f"{poller.name}: {len(added)} new events in the outbox"
                      + (f" ({result.summary})" if result.summary else ""))
            if once:
                return 0
            failures = 0
        try:
            time.sleep(backoff.delay(interval, failures))
        except KeyboardInterrupt:
            return 0
