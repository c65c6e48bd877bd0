"""The ``busgate`` command.

Each subcommand lives in its own module and is imported only when it runs, so
short-lived commands (``busgate mail`` on every archive mail, a source's hook on
every push) start fast. A module defines ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``, and may define ``parse_fast(argv)`` to read its usual command
line without argparse. Besides the core's commands below, a source may add commands
(:class:`gateway.sources.CommandSpec`); the registry is read for them only when the
word is not a core command (or for ``--help``).
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
    "poll": "gateway.cli.poll",
    "replay": "gateway.cli.replay",
    "reprocess": "gateway.cli.reprocess",
    "status": "gateway.cli.status",
    "check-config": "gateway.cli.check_config",
    "keys": "gateway.cli.keys",
    "notify": "gateway.cli.notify",
    "record": "gateway.cli.record",
    "web": "gateway.cli.web",
    "stats": "gateway.cli.stats",
    "irc": "gateway.cli.irc",
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
    for name, module_name in _commands(only).items():
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


def _commands(only: str | None) -> dict[str, str]:
    """Command name -> module: the core's, plus the sources' when they may be wanted
    (every command for help and errors, else only the one named)."""
    if only in COMMANDS:
        return COMMANDS
    from gateway import sources

    added = {name: spec.module for name, (_, spec) in sources.commands().items()
             if only is None or name == only}
    clash = added.keys() & COMMANDS.keys()
    if clash:
        raise sources.RegistryError(f"a source adds the core command {sorted(clash)[0]!r}")
    return {**COMMANDS, **added}


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
    if args_list[:1] == ["publish"]:
        # ``busgate publish --message`` from the shell, once per message: the same.
        from gateway.cli import publish

        fast = publish.parse_fast(args_list[1:])
        if fast is not None:
            return _run(publish.run, fast)
    from gateway.errors import ConfigError

    try:
        name = _command_name(args_list)
        if name is not None and name not in COMMANDS and args_list[:1] == [name]:
            fast = _parse_fast(name, args_list[1:])  # a source's hook: no argparse either
            if fast is not None:
                return _run(fast[0], fast[1])
        parser = build_parser(name)
    except ConfigError as exc:  # a broken source registry
        print(f"busgate: {exc}", file=sys.stderr)
        return EX_USAGE
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
            return arg if arg in COMMANDS or _source_command(arg) else None
    return None


def _parse_fast(name: str, argv: list[str]):  # type: ignore[no-untyped-def]
    """(run, args) of a source command whose module reads its usual command line itself
    (``parse_fast(argv)``, as ``busgate mail`` does), or None."""
    from gateway import sources

    spec = sources.command(name)
    module = _load(spec.module) if spec is not None else None
    parse = getattr(module, "parse_fast", None)
    args = parse(argv) if parse is not None else None
    return (module.run, args) if args is not None else None  # type: ignore[union-attr]


def _source_command(word: str) -> bool:
    from gateway import sources

    return sources.command(word) is not None


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
