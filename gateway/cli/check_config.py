"""``busgate check-config``: load and validate the configuration, print the effective one.

It refuses what ``busgate run`` would: the core's keys, every registered source's
``validate`` (enabled or not), and state or spool directories this user cannot write."""

from __future__ import annotations

import argparse

HELP = "validate the configuration and print the effective settings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="print nothing when it is valid")


def run(args: argparse.Namespace) -> int:
    from gateway import config
    from gateway.cli import load_settings

    settings = load_settings(args)  # checks the core and every source table it sets
    config.check_sources(settings)  # every registered source, its defaults included
    config.check_writable(settings)  # what `busgate run` would refuse, refused here too
    from gateway import verify

    verify.check_settings(settings.signing)  # keys and trust anchors usable
    if not args.quiet:
        origin = ", ".join(settings.loaded_from) or "embedded defaults"
        print(f"# busgate effective configuration (from {origin})")
        print(config.to_toml(settings), end="")
    return 0
