"""``python3 -m gateway.docgen``: man pages and bash completion from the argparse parser.

Run at build time (the Debian package, ``make man``), never by the gateway itself:
nothing here is hand-maintained, so a new option shows up in ``busgate-CMD(1)`` and in
completion the next time the package is built. The parser is
:func:`gateway.cli.build_parser` with every command loaded, the sources' commands
(``git-hook``) and pollers (``busgate poll NAME``) included.

The option lists are rendered by argparse-manpage and the completion by shtab. Both
must work with Debian bookworm's versions (argparse-manpage 1.2.2, shtab 1.5.5) as well
as current ones, whose page layouts differ: so only the option entries (``.TP`` items)
are taken from argparse-manpage, one parser level at a time, and the page around them
(header, NAME, SYNOPSIS, the sections of busgate(1)) is written here. Output is
reproducible: no date unless ``SOURCE_DATE_EPOCH`` is set, and help text is not wrapped
to the terminal's width (roff fills it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from gateway import __version__

EX_USAGE, EX_UNAVAILABLE = 2, 69

#: The packaged files busgate(1) lists (the Debian package sets them up).
FILES = (
    ("/etc/busgate/busgate.toml", "the configuration (a conffile): the embedded defaults "
                                  "with the packaged state and spool directories"),
    ("/var/lib/busgate", "state: the outbox database busgate.sqlite (outbox, dedup keys, "
                         "quarantine), the history database history.sqlite; owned by the "
                         "busgate user"),
    ("/var/spool/busgate", "the spool that busgate mail, busgate publish and the sources' "
                           "hooks write and the daemon reads; group busgate, setgid, so the "
                           "MTA's user and git users in group busgate can write it"),
    ("/lib/systemd/system/busgate.service", "the daemon (busgate run); beside it "
                                            "busgate-record.service, busgate-web.service and "
                                            "busgate-irc.service"),
)

#: Exit statuses the commands use (sysexits(3) where one fits).
EXIT_STATUS = (
    ("0", "success"),
    ("1", "a check found a problem (busgate keys show, busgate keys policy); also an "
          "unexpected error, with a Python traceback"),
    ("2", "bad command line or configuration"),
    ("65", "bad input data (EX_DATAERR): an empty mail, a message that fails its schema"),
    ("66", "missing input (EX_NOINPUT): busgate record --backfill without an outbox"),
    ("69", "a service is unavailable (EX_UNAVAILABLE): no daemon, replay endpoint or bus "
           "answered, or the state directory is locked by another daemon"),
    ("70", "an internal error (EX_SOFTWARE)"),
    ("73", "the history database cannot be opened or created (EX_CANTCREAT)"),
    ("75", "temporary failure (EX_TEMPFAIL): nothing was stored; an MTA retries later"),
    ("130", "interrupted"),
)

#: Option metavars/dests naming files or directories: completed as such by bash.
FILE_WORDS = frozenset({"PATH", "FILE", "CERT", "DATABASE", "RULES"})
DIR_WORDS = frozenset({"DIR", "CA_DIR", "PATH_TO_REPO", "STATE_DIR", "SPOOL"})


class DocgenError(Exception):
    """A documentation tool is missing (exit 69 with a line saying what to install), or
    the build environment is wrong (``status`` 2)."""

    def __init__(self, message: str, status: int = EX_UNAVAILABLE):
        super().__init__(message)
        self.status = status


# --- the parser -------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    """The whole ``busgate`` parser, every command and source loaded. Refuses to go on
    without any registered source: the entry points are not on the path (run it where
    busgate's dist-info is, e.g. the package's installed tree), and pages built then
    would silently lack the sources' commands."""
    from gateway import sources
    from gateway.cli import build_parser

    if not sources.registry():
        raise DocgenError("no busgate source is registered: put busgate's installed "
                          "distribution (its dist-info or egg-info) on PYTHONPATH")
    return build_parser()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser,
                                                                    str]]:
    """Name -> (parser, help) of a parser's subcommands, in ``--help`` order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return {name: (sub, helps.get(name, "")) for name, sub in action.choices.items()}
    return {}


def documented_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions a page lists: all but ``--help`` (every command has it) and the
    subcommand chooser (documented as subcommands)."""
    return [a for a in parser._actions
            if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
            and a.help != argparse.SUPPRESS]


# --- roff -------------------------------------------------------------------------------

def esc(text: str) -> str:
    """Text for a roff line: backslashes and hyphens escaped, one line."""
    text = " ".join(text.split()).replace("\\", "\\\\").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def _text_line(line: str) -> str:
    """A text line from argparse-manpage, made safe where a wrapped word starts it
    with a control character (neither version guards that)."""
    if line[:1] in (".", "'") and not re.match(r"\.(TP|br|B|I|RS|RE|PP)\b", line):
        return "\\&" + line
    return line


@contextlib.contextmanager
def _unwrapped() -> Iterator[None]:
    """argparse wraps help to ``$COLUMNS``: make it wide, so pages do not depend on the
    terminal that built them (roff does the filling)."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "10000"
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _manpage_class():  # type: ignore[no-untyped-def]
    try:
        from argparse_manpage.manpage import Manpage  # 2.0 and later
    except ImportError:
        try:
            from build_manpages.manpage import Manpage  # 1.x (Debian bookworm: 1.2.2)
        except ImportError:
            raise DocgenError("man pages need argparse-manpage (Debian: apt install "
                              "python3-argparse-manpage; pip: pip install 'busgate[docs]')"
                              ) from None
    return Manpage


def option_entries(parser: argparse.ArgumentParser) -> list[str]:
    """The ``.TP`` entries argparse-manpage renders for one level of ``parser`` (its
    options and positionals, not its subcommands' own)."""
    view = argparse.ArgumentParser(prog=parser.prog, add_help=False)
    for action in documented_actions(parser):
        view._add_action(action)
    if not view._actions:
        return []
    with _unwrapped():
        page = str(_manpage_class()(view))
    lines = page.splitlines()
    start = next((i for i, line in enumerate(lines) if line == ".TP"), len(lines))
    return [_text_line(line) for line in lines[start:]
            if line.strip() and not line.startswith(".SH") and not line.startswith(".SS")]


def _synopsis(parser: argparse.ArgumentParser) -> list[str]:
    with _unwrapped():
        usage = parser.format_usage().split(":", 1)[-1]
    words = usage.split()
    prog_words = len(parser.prog.split())
    return [".B " + esc(" ".join(words[:prog_words])), esc(" ".join(words[prog_words:]))]


def _header(name: str) -> str:
    """``.TH``: a date only from ``SOURCE_DATE_EPOCH`` (reproducible builds)."""
    date = ""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        import time

        try:
            date = time.strftime("%Y-%m-%d", time.gmtime(int(epoch)))
        except (ValueError, OverflowError):
            raise DocgenError(f"SOURCE_DATE_EPOCH is not a number of seconds: {epoch!r}",
                              EX_USAGE) from None
    return f'.TH "{esc(name.upper())}" "1" "{date}" "busgate {__version__}" "busgate manual"'


def _items(pairs: tuple[tuple[str, str], ...], bold: bool = True) -> list[str]:
    lines = []
    for term, text in pairs:
        lines += [".TP", f"\\fB{esc(term)}\\fR" if bold else esc(term), esc(text)]
    return lines


# --- pages ------------------------------------------------------------------------------

def command_page(name: str, command: argparse.ArgumentParser, help_text: str) -> str:
    """busgate-NAME(1): synopsis, description, options, and its subcommands with theirs."""
    lines = [_header(f"busgate-{name}"), ".SH NAME", esc(f"busgate-{name} - {help_text}"),
             ".SH SYNOPSIS", *_synopsis(command)]
    lines += [".SH DESCRIPTION", esc(command.description or help_text)]
    nested = subcommands(command)
    if nested:
        lines += [".PP", esc(f"{command.prog} takes one of these subcommands; each is "
                             "described with its options under SUBCOMMANDS below:")]
        lines += _items(tuple((sub, text) for sub, (_, text) in nested.items()))
    entries = option_entries(command)
    if entries:
        lines += [".SH OPTIONS", *entries]
    if nested:
        lines.append(".SH SUBCOMMANDS")
        for sub_parser, text in nested.values():
            lines += [f".SS {esc(sub_parser.prog)}", *_synopsis(sub_parser)]
            lines += [".PP", esc(sub_parser.description or text)]
            lines += option_entries(sub_parser)
    lines += [".SH SEE ALSO", "\\fBbusgate\\fR(1)"]
    return "\n".join(lines) + "\n"


def main_page(root: argparse.ArgumentParser) -> str:
    """busgate(1): the global options, the commands, files, environment, exit status."""
    commands = subcommands(root)
    lines = [_header("busgate"), ".SH NAME", esc("busgate - " + (root.description or "")),
             ".SH SYNOPSIS", ".B busgate", esc("[--version] [--config PATH] COMMAND "
                                               "[--config PATH] [OPTIONS] [ARGS]"),
             ".SH DESCRIPTION", esc(
                 "busgate turns a Linux distribution's legacy services into signed events "
                 "on a message bus (ZeroMQ in the fedmsg wire format, AMQP). busgate run "
                 "is the daemon; busgate mail (an MTA pipe) and the sources' hooks hand "
                 "events to it through the spool; the other commands consume, inspect "
                 "and maintain. Every command takes -h or --help and --config PATH, "
                 "before or after the command name (the one after it wins)."),
             ".PP", esc("The sources in this build:"), *_items(_sources()),
             ".SH OPTIONS", *option_entries(root), ".SH COMMANDS"]
    for name, (_, text) in commands.items():
        lines += [".TP", f"\\fBbusgate\\-{esc(name)}\\fR(1)", esc(text)]
    lines += [".SH FILES", *_items(FILES, bold=False)]
    lines += [".SH ENVIRONMENT", ".TP", "\\fBBUSGATE_CONFIG\\fR",
              esc("the configuration file when --config is not given; without either the "
                  "embedded defaults apply (busgate check-config prints what is in force). "
                  "The packaged units set BUSGATE_CONFIG=/etc/busgate/busgate.toml.")]
    lines += [".SH EXIT STATUS", *_items(EXIT_STATUS)]
    see_also = [f"\\fBbusgate\\-{esc(name)}\\fR(1)" for name in commands]
    see_also += ["\\fBsystemctl\\fR(1)", "\\fBjournalctl\\fR(1)", "\\fBsysexits.h\\fR(3head)"]
    lines += [".SH SEE ALSO", ",\n".join(see_also)]
    return "\n".join(lines) + "\n"


def _sources() -> tuple[tuple[str, str], ...]:
    """(name, description) of each registered source (the registry decides, not this)."""
    from gateway import sources

    return tuple((name, source.description) for name, source in sources.registry().items())


def man_pages(root: argparse.ArgumentParser | None = None) -> dict[str, str]:
    """File name -> page: busgate.1 and busgate-NAME.1 for every command."""
    root = root or parser()
    pages = {"busgate.1": main_page(root)}
    for name, (command, text) in subcommands(root).items():
        pages[f"busgate-{name}.1"] = command_page(name, command, text)
    return pages


# --- bash completion --------------------------------------------------------------------

def mark_paths(root: argparse.ArgumentParser) -> None:
    """Tell shtab which arguments name files or directories (by metavar, else dest),
    so ``busgate --config <TAB>`` completes paths."""
    import shtab

    for action in root._actions:
        word = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
        if word in FILE_WORDS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif word in DIR_WORDS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    for sub, _ in subcommands(root).values():
        mark_paths(sub)


def bash_completion(root: argparse.ArgumentParser | None = None) -> str:
    """The bash completion script (function ``_shtab_busgate``) for every command."""
    try:
        import shtab
    except ImportError:
        raise DocgenError("bash completion needs shtab (Debian: apt install python3-shtab; "
                          "pip: pip install 'busgate[docs]')") from None
    root = root or parser()
    mark_paths(root)
    with _unwrapped():
        return _fix_choices(shtab.complete(root, shell="bash"))  # noqa: S604 (a name)


#: shtab 1.5.5 (Debian bookworm) reads a choices array as a scalar, so ``busgate poll
#: <TAB>`` offered only the first poller; later versions read every element.
_CHOICES_155 = ('  local current_action_choices_var="${current_action}_choices"\n'
                '  current_action_choices="${!current_action_choices_var}"\n')
_CHOICES_FIXED = ('  local current_action_choices_var="${current_action}_choices[@]"\n'
                  '  current_action_choices="$(printf \'%s\\n\' '
                  '"${!current_action_choices_var}")"\n')


def _fix_choices(script: str) -> str:
    """Every choice completes with shtab 1.5.5 too (one per line: its compgen splits
    the list on newlines)."""
    return script.replace(_CHOICES_155, _CHOICES_FIXED)


# --- command line -----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python3 -m gateway.docgen",
                                  description="Write busgate's man pages or bash completion.")
    sub = cli.add_subparsers(dest="what", required=True)
    man = sub.add_parser("man", help="write busgate.1 and busgate-COMMAND.1 into OUTDIR")
    man.add_argument("outdir", metavar="OUTDIR", type=Path)
    bash = sub.add_parser("bash-completion", help="write the bash completion script to FILE")
    bash.add_argument("file", metavar="FILE", type=Path)
    args = cli.parse_args(argv)
    try:
        if args.what == "man":
            pages = man_pages()
            args.outdir.mkdir(parents=True, exist_ok=True)
            for name, text in pages.items():
                (args.outdir / name).write_text(text, encoding="utf-8")
            print(f"{len(pages)} man pages in {args.outdir}")
        else:
            script = bash_completion()
            args.file.parent.mkdir(parents=True, exist_ok=True)
            args.file.write_text(script, encoding="utf-8")
            print(f"bash completion in {args.file}")
    except DocgenError as exc:
        print(f"gateway.docgen: {exc}", file=sys.stderr)
        return exc.status
    except OSError as exc:  # an unwritable OUTDIR or FILE
        print(f"gateway.docgen: {exc}", file=sys.stderr)
        return 73  # EX_CANTCREAT
    return 0


if __name__ == "__main__":
    sys.exit(main())
