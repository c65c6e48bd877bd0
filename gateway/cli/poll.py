"""``busgate poll NAME``: run one poller by hand (each poller's options live in its module)."""

from __future__ import annotations

import argparse
import importlib

HELP = "run a poller by hand (debbugs, wanna-build)"

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
        module.add_arguments(command)
        command.set_defaults(poll_handler=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args.poll_handler(args) or 0)
