"""``busgate status``: outbox depth, last seq_id, counters, quarantine size."""

from __future__ import annotations

import argparse
import json

HELP = "show outbox depth, last seq_id, counters and quarantine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from gateway import runtime
    from gateway.cli import load_settings

    settings = load_settings(args)
    status = runtime.open_store(settings).status()
    status["spool_pending"] = len(runtime.open_spool(settings).pending())
    if args.json:
        print(json.dumps(status, sort_keys=True))
        return 0
    print(f"database        {status['database']}")
    print(f"last seq_id     {status['last_seq_id']}")
    print(f"published up to {status['published_seq_id']}")
    print(f"outbox depth    {status['outbox_depth']}")
    print(f"spool pending   {status['spool_pending']}")
    quarantine = status["quarantine"]
    total = sum(quarantine.values())
    detail = ", ".join(f"{k} {v}" for k, v in quarantine.items())
    print(f"quarantine      {total}" + (f" ({detail})" if detail else ""))
    for name, value in status["counters"].items():
        print(f"  {name:<28} {value}")
    return 0
