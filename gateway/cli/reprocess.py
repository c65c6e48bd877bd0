"""``busgate reprocess``: list quarantined inputs, or run them through the parsers again."""

from __future__ import annotations

import argparse
import sys
import time

EX_USAGE, EX_DATAERR, EX_UNAVAILABLE = 2, 65, 69
HELP = "list quarantined inputs or run them again after a fix"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="*", type=int, metavar="ID", help="quarantine ids")
    parser.add_argument("--all", action="store_true", help="every quarantined item")
    parser.add_argument("--list", action="store_true", help="only list what is quarantined")
    parser.add_argument("--force-size", action="store_true",
                        help="also parse items quarantined for being over the size limit")


def run(args: argparse.Namespace) -> int:
    from gateway import ingest, runtime
    from gateway.cli import load_settings
    from gateway.errors import StoreError

    settings = load_settings(args)
    try:  # like `status`: never create state where no daemon's is (the wrong place)
        store = runtime.open_daemon_store(settings)
    except StoreError as exc:
        print(f"busgate reprocess: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    items = store.quarantined(None if (args.all or args.list) and not args.ids else args.ids)
    if args.list or not (args.all or args.ids):
        for item in items:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item["created"]))
            error = item["error"].splitlines()[-1] if item["error"] else ""
            print(f"{item['id']:>6}  {when}  {item['kind']:<6} {item['reason']:<12} "
                  f"{len(item['raw']):>9} B  {error}")
        if not items:
            print("quarantine is empty")
        return 0
    failed = 0
    for item in items:
        outcome = ingest.reprocess(store, item, force_size=args.force_size, settings=settings)
        if outcome.quarantined:
            failed += 1
            print(f"{item['id']}: still {outcome.quarantined}: {outcome.error}")
        else:
            print(f"{item['id']}: {outcome.added} event(s) added, {outcome.duplicates} "
                  "already published; released")
    missing = set(args.ids) - {i["id"] for i in items}
    for ident in sorted(missing):
        print(f"{ident}: no such quarantined item")
    # 65: an input still does not parse; 2: an ID that names no quarantined input.
    return EX_DATAERR if failed else EX_USAGE if missing else 0
