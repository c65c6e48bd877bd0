"""``busgate status``: outbox depth, last seq_id, counters, quarantine size."""

from __future__ import annotations

import argparse
import json

HELP = "show health, outbox depth, last seq_id, counters and quarantine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


EX_UNAVAILABLE = 69


def run(args: argparse.Namespace) -> int:
    import sys

    from gateway import config, health, liveness, mark, retention, runtime
    from gateway.cli import load_settings
    from gateway.errors import StoreError

    settings = load_settings(args)
    # A reader never creates state: without the daemon's mark this is the wrong place.
    if mark.read_state(settings.state_dir) is None or not settings.db_path.exists():
        problem = (mark.unmarked_state_message(settings.state_dir)
                   if mark.read_state(settings.state_dir) is None else
                   f"the state database {settings.db_path} is missing (deleted?)")
        print(f"busgate status: {problem}", file=sys.stderr)
        return EX_UNAVAILABLE
    flags = health.read(settings.state_dir)
    pid = liveness.running(settings.state_dir)
    daemon = "not running" if pid is None else f"running (pid {pid})" if pid else "running"
    try:
        enabled = config.enabled_transports(settings)
        status = runtime.open_store(settings, create=False).status(enabled)
    except StoreError as exc:
        print(f"busgate status: the state database cannot be read: {exc}", file=sys.stderr)
        for component, flag in flags.items():
            print(f"busgate status: {component}: {flag.get('problem')}", file=sys.stderr)
        return EX_UNAVAILABLE
    status["spool_pending"] = len(runtime.open_spool(settings).pending())
    recorded = retention.history_cursor(settings, runtime.open_store(settings, create=False))
    if recorded is not None:  # the recorder inside busgate run ([history] enabled)
        status["history"] = {"cursor": recorded, "lag": status["last_seq_id"] - recorded}
    status["health"] = "ok" if not flags else "degraded"
    status["faults"] = flags
    status["daemon"] = {"running": pid is not None, "pid": pid or None}
    if args.json:
        print(json.dumps(status, sort_keys=True))
        return 0
    print(f"daemon          {daemon}")
    print(f"health          {status['health']}")
    for component, flag in flags.items():
        print(f"  {component}: {flag.get('problem')}")
    print(f"database        {status['database']}")
    print(f"last seq_id     {status['last_seq_id']}")
    print(f"published up to {status['published_seq_id']}")
    print(f"outbox depth    {status['outbox_depth']}")
    for name, entry in status["transports"].items():
        print(f"  {name + ' cursor':<14}{entry['cursor']} (lag {entry['lag']})")
    if "history" in status:
        print(f"  {'history cursor':<15}{status['history']['cursor']} "
              f"(lag {status['history']['lag']})")
    if status.get("pruned_seq_id"):
        print(f"pruned up to    {status['pruned_seq_id']} (outbox retention)")
    print(f"spool pending   {status['spool_pending']}")
    quarantine = status["quarantine"]
    total = sum(quarantine.values())
    detail = ", ".join(f"{k} {v}" for k, v in quarantine.items())
    print(f"quarantine      {total}" + (f" ({detail})" if detail else ""))
    for name, value in status["counters"].items():
        print(f"  {name:<28} {value}")
    return 0
