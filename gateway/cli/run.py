"""``busgate run``: the daemon."""

from __future__ import annotations

import argparse
import os
import sys

HELP = "run the gateway daemon (spool, outbox, publisher, replay, SMTP, pollers)"
EX_SOFTWARE = 70
EX_UNAVAILABLE = 69


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("--log-format", choices=("text", "json"),
                        help="log lines as text or JSON objects (default: [log] format)")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from gateway import config, daemon, liveness
    from gateway.cli import load_settings
    from gateway.errors import BusgateError

    settings = load_settings(args)
    config.check_sources(settings)  # the same refusals as check-config: exit 2
    config.check_writable(settings)
    from gateway import verify

    verify.check_settings(settings.signing)  # an unusable key: exit 2, not a daemon crash
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        lock = liveness.hold(settings.state_dir)  # held until this process exits
    except liveness.AlreadyRunning as exc:
        print(f"busgate: {settings.state_dir}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except OSError as exc:
        print(f"busgate: cannot lock the state directory {settings.state_dir}: {exc.strerror}",
              file=sys.stderr)
        return EX_UNAVAILABLE
    from gateway import logsetup
    from gateway.errors import ConfigError

    try:
        logsetup.configure(args.log_format or settings.log.format,
                           "" if args.log_format else settings.log.config, args.verbose)
    except ConfigError as exc:
        os.close(lock)
        print(f"busgate: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(daemon.serve(settings))
    except BusgateError as exc:
        print(f"busgate: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    finally:
        os.close(lock)
    return 0
