"""``busgate poll NAME``: run one poller by hand (each poller's options live in its module)."""

from __future__ import annotations

import argparse
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.polling import Poller
    from gateway.store import Store

HELP = "run a poller by hand (debbugs, wanna-build)"
EX_TEMPFAIL = 75

#: Poller name -> CLI module defining add_arguments(parser) and run(args).
POLL_COMMANDS = {
    "debbugs": "gateway.cli.poll_debbugs",
    "wanna-build": "gateway.cli.poll_wannabuild",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="poller", metavar="POLLER", required=True)
    for name, module_name in POLL_COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        # also accepted after the poller name (``busgate poll wanna-build --config X``)
        command.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                             help="configuration file (default: $BUSGATE_CONFIG, else the "
                                  "embedded defaults)")
        command.add_argument("--once", action="store_true", help="run one poll and exit")
        command.add_argument("--dry-run", action="store_true",
                             help="print the events as JSON lines; store nothing")
        module.add_arguments(command)
        command.set_defaults(poll_handler=module.run)


def run(args: argparse.Namespace) -> int:
    import sys

    from gateway.errors import StoreError

    try:
        return int(args.poll_handler(args) or 0)
    except StoreError as exc:  # no daemon's state here, or the state failed: poll later
        print(f"busgate poll: {exc}; nothing stored", file=sys.stderr)
        return EX_TEMPFAIL


def open_store(settings: Settings, dry_run: bool) -> Store:
    """The daemon's state store, or an empty in-memory one for a dry run with no state
    yet (nothing to compare with, and nothing may be written). Raises
    :class:`~gateway.errors.StoreError` where no daemon marked the state directory."""
    from gateway import runtime
    from gateway.store import EnvelopeFactory, Store

    if dry_run and not settings.db_path.exists():
        return Store(":memory:", EnvelopeFactory(settings.topic_prefix,
                                                 settings.publisher.name, settings.username))
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
                print_events(result.events, settings.topic_prefix)
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
