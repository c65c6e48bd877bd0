"""``busgate poll debbugs``: run the debbugs poller by hand.

``--once`` runs one poll and exits (0 on success, 75 = EX_TEMPFAIL when the
server failed; nothing was committed then). Without ``--once`` it polls every
``debbugs.interval`` seconds until interrupted, backing off after a failed
poll by the rule ``busgate run``'s scheduler follows (:mod:`gateway.backoff`).
Command-line options override the config file.
"""

from __future__ import annotations

import argparse
import dataclasses

HELP = "poll the debbugs SOAP interface (new/changed/closed/archived bugs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="SOAP endpoint (overrides debbugs.url)")
    parser.add_argument("--package", action="append", default=[], metavar="NAME",
                        help="watch this binary package's bugs (repeatable; replaces "
                             "debbugs.packages)")
    parser.add_argument("--source", action="append", default=[], metavar="NAME",
                        help="watch this source package's bugs (repeatable; replaces "
                             "debbugs.sources)")
    parser.add_argument("--backfill", action="store_true",
                        help="report every watched bug not seen before as debbugs.bug.new "
                             "instead of recording a silent baseline")


def overridden(settings, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """``settings`` with the command-line options applied to its ``debbugs`` section."""
    changes: dict[str, object] = {}
    if args.url:
        changes["url"] = args.url
    if args.package:
        changes["packages"] = list(args.package)
    if args.source:
        changes["sources"] = list(args.source)
    return dataclasses.replace(settings, debbugs=dataclasses.replace(settings.debbugs, **changes))


def run(args: argparse.Namespace) -> int:
    from adapters.debbugs.poller import from_settings
    from gateway.cli import load_settings
    from gateway.cli.poll import loop, open_store
    from gateway.errors import ConfigError

    settings = overridden(load_settings(args), args)
    if not settings.debbugs.url.strip():  # refused before any state is created
        raise ConfigError("no SOAP endpoint configured (or give --url)", key="debbugs.url",
                          path=settings.loaded_from[0] if settings.loaded_from else None)
    poller = from_settings(settings, args)
    store = open_store(settings, args.dry_run)
    return loop(poller, store, settings, once=args.once, dry_run=args.dry_run,
                interval=settings.debbugs.interval)
