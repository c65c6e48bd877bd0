"""``busgate run``: the daemon."""

from __future__ import annotations

import argparse
import sys

HELP = "run the gateway daemon (spool, outbox, publisher, replay, SMTP, pollers)"
EX_SOFTWARE = 70
EX_UNAVAILABLE = 69


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from gateway import daemon
    from gateway.cli import load_settings
    from gateway.errors import BusgateError

    settings = load_settings(args)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(daemon.serve(settings))
    except BusgateError as exc:
        print(f"busgate: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    return 0
