"""``busgate record``: keep every message of the bus in the history database."""

from __future__ import annotations

import argparse
import contextlib
import sys

HELP = "record every message of the bus in the history database ([history])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", metavar="PATH|URL",
                        help="history database, a path or a postgresql:// URL (default: "
                             "history.database, else <state.dir>/history.sqlite)")
    parser.add_argument("--endpoint", action="append", default=None, metavar="PUB[,REPLAY]",
                        help="record this publisher (repeatable; default: history.endpoints, "
                             "else discovery's)")
    parser.add_argument("--amqp", metavar="QUEUE",
                        help="record from this durable RabbitMQ queue instead of ZeroMQ")
    parser.add_argument("--backfill", action="store_true",
                        help="copy this gateway's own outbox into the history, move the "
                             "recorder's position past it, and exit")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    parser.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")


def run(args: argparse.Namespace) -> int:
    from gateway import endpoints as grammar
    from gateway.cli import load_settings
    from gateway.consumer import NotHandled
    from gateway.history import backends, recorder
    from gateway.history.store import HistoryError
    from gateway.store import Store

    settings = load_settings(args)
    for spec in args.endpoint or []:
        for url in spec.split(",", 1):
            problem = grammar.problem(url)
            if problem:
                print(f"busgate record: --endpoint: {problem}", file=sys.stderr)
                return 2
    try:
        store = backends.open_history(settings, database=args.database)
    except HistoryError as exc:
        print(f"busgate record: {exc}", file=sys.stderr)
        return 73
    try:
        if args.backfill:
            if not settings.db_path.exists():
                print(f"busgate record: no outbox at {settings.db_path}", file=sys.stderr)
                return 66
            outbox = Store(settings.db_path, create=False)
            try:
                read, added = recorder.backfill(settings, store, outbox)
            except HistoryError as exc:
                print(f"busgate record: {exc}", file=sys.stderr)
                return 75
            finally:
                outbox.close()
            print(f"busgate record: backfilled {added} new of {read} outbox messages "
                  f"into {store.where}")
            return 0
        endpoints = recorder.endpoints_of(settings, args.endpoint) if not args.amqp else None
        if endpoints is not None and not endpoints:
            print("busgate record: no endpoints (set history.endpoints or [discovery], or "
                  "use --endpoint)", file=sys.stderr)
            return 2
        rec = recorder.Recorder(settings, store, endpoints=endpoints, amqp_queue=args.amqp)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                rec.run(count=args.count, timeout=args.timeout)
        except NotHandled as exc:  # the history went away: its position waits for it
            print(f"busgate record: {exc}; {rec.stored} stored before", file=sys.stderr)
            return 75
        print(f"busgate record: {rec.stored} stored, {rec.known} already there",
              file=sys.stderr)
        return 0
    finally:
        store.close()
