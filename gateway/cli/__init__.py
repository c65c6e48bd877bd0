"""The ``busgate`` command.

Each subcommand lives in its own module and is imported only when it runs, so
short-lived commands (``busgate mail`` on every archive mail, ``busgate
git-hook`` on every push) start fast. A module defines ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import importlib
import sys

from gateway import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

#: Subcommand name -> module. Order is the order of ``busgate --help``.
COMMANDS = {
    "run": "gateway.cli.run",
    "publish": "gateway.cli.publish",
    "tail": "gateway.cli.tail",
    "mail": "gateway.cli.mail",
    "git-hook": "gateway.cli.git_hook",
    "poll": "gateway.cli.poll",
    "replay": "gateway.cli.replay",
    "reprocess": "gateway.cli.reprocess",
    "status": "gateway.cli.status",
    "check-config": "gateway.cli.check_config",
    "keys": "gateway.cli.keys",
}

EX_USAGE = 2


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="busgate",
        description="Bridge legacy distribution services onto one message bus.",
    )
    parser.add_argument("--version", action="version", version=f"busgate {__version__}")
    # Before the command (``busgate --config PATH run``) or after it; the one after wins.
    # Its own dest: a subparser's default would otherwise overwrite the value given here.
    parser.add_argument("--config", dest="global_config", metavar="PATH",
                        help="configuration file (default: $BUSGATE_CONFIG, else the "
                             "embedded defaults); also accepted after the command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name)
            continue
        module = _load(module_name)
        if module is None:
            continue
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        command.add_argument("--config", metavar="PATH",
                             help="configuration file (default: $BUSGATE_CONFIG, else "
                                  "the embedded defaults)")
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def _load(module_name: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # a command not built yet in this checkout
            return None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["mail"]:
        # The MTA pipe runs once per archive mail: its few options are read without
        # building the argparse parser (help and errors still go through argparse).
        from gateway.cli import mail

        fast = mail.parse_fast(args_list[1:])
        if fast is not None:
            return _run(mail.run, fast)
    parser = build_parser(_command_name(args_list))
    args = parser.parse_args(args_list)
    if not hasattr(args, "handler"):
        parser.error(f"command {args.command!r} is not available in this build")
    if getattr(args, "config", None) is None:
        args.config = args.global_config
    return _run(args.handler, args)


def _command_name(args_list: list[str]) -> str | None:
    """The subcommand's name: the first word that is not an option or ``--config``'s value."""
    skip = False
    for arg in args_list:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def _run(handler, args) -> int:  # type: ignore[no-untyped-def]
    from gateway.errors import ConfigError

    try:
        code = int(handler(args) or 0)
        sys.stdout.flush()
        return code
    except ConfigError as exc:
        print(f"busgate: configuration error: {exc}", file=sys.stderr)
        return EX_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """The reader of stdout went away (``busgate status | head -1``): what it wanted it got,
    so exit 0, quietly. stdout is pointed at /dev/null first, or the interpreter's final
    flush would fail again and print a traceback."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def load_settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Settings for a command (``--config`` or ``$BUSGATE_CONFIG`` or defaults)."""
    from gateway import config

    return config.load(getattr(args, "config", None))
