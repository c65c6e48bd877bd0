"""``busgate mail``: the MTA pipe. One RFC 822 mail on stdin -> the spool, durably.

Exit codes follow sysexits(3), which every MTA understands:

- 0 only once the mail is fsync'd in the spool (the daemon need not run);
- 75 (EX_TEMPFAIL) when it cannot be stored: spool unwritable, disk full, a
  read error, *and* an unreadable configuration (the MTA keeps the mail queued
  and retries while the administrator fixes it, instead of bouncing it);
- 65 (EX_DATAERR) for empty input, the one thing that is not a mail at all.

``--spool DIR`` names the daemon's spool directly, so the configuration is not
read at all (the fastest pipe); the directory must already be a spool.

Mail above ``mail.max_size`` is still spooled (streamed in chunks, never held in
memory): the daemon keeps it in quarantine as ``oversize``. This path imports
only the config loader and the spool; parsing happens in the daemon.
``--dry-run`` parses instead and prints the events, storing nothing.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator
    from typing import BinaryIO

HELP = "MTA pipe: store one mail from stdin in the spool (exit 75 makes the MTA retry)"

EX_OK = 0
EX_DATAERR = 65
EX_TEMPFAIL = 75
CHUNK = 256 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="parse the mail and print the events it would publish; "
                             "store nothing")
    parser.add_argument("--spool", metavar="DIR",
                        help="the daemon's spool directory: store there without reading "
                             "the configuration (the fastest MTA pipe); it must exist")


def parse_fast(argv: list[str]) -> SimpleNamespace | None:
    """The options of :func:`add_arguments`, read without argparse (or getopt, which
    imports gettext): a few milliseconds on every archive mail. ``None`` hands the
    command line to argparse (help, an unknown option, a stray argument)."""
    args = SimpleNamespace(dry_run=False, spool=None, config=None)
    words = iter(argv)
    for word in words:
        name, eq, value = word.partition("=")
        if word == "--dry-run":
            args.dry_run = True
        elif name in ("--spool", "--config"):
            value = value if eq else next(words, "")
            if not value or value.startswith("-"):
                return None
            setattr(args, name[2:], value)
        else:
            return None
    return args


def run(args: argparse.Namespace) -> int:
    if sys.stdin is None:
        return _fail(EX_DATAERR, "no standard input")
    stdin = sys.stdin.buffer
    if args.dry_run:
        return _dry_run(args, stdin)
    from gateway.errors import ConfigError

    try:
        first = _read(stdin, CHUNK)
    except OSError as exc:
        return _fail(EX_TEMPFAIL, f"cannot read the mail from stdin: {exc}")
    if len(first) < CHUNK and not first.strip():
        return _fail(EX_DATAERR, "no mail on stdin (empty input)")
    from gateway.errors import SpoolError
    from gateway.spool import Spool

    if args.spool:
        # No configuration to parse (tomllib alone costs more than the interpreter's
        # start). The directory must already be a spool, made by `busgate run`: a typo
        # then keeps the mail with the MTA instead of in a spool no daemon reads.
        spool = Spool(args.spool)
        if not spool.is_ready():
            return _fail(EX_TEMPFAIL, f"{args.spool} is not a busgate spool (no tmp/ and "
                                      "new/; start `busgate run` once, or fix --spool); "
                                      "mail left with the MTA")
    else:
        try:
            from gateway.cli import load_settings

            settings = load_settings(args)
        except ConfigError as exc:
            return _fail(EX_TEMPFAIL, f"configuration error, mail left with the MTA: {exc}")
        # What gateway.runtime.open_spool(settings) builds, without importing the store.
        spool = Spool(settings.spool_dir)
    try:
        spool.deliver("mail", _chunks(first, stdin))
    except (SpoolError, OSError) as exc:
        return _fail(EX_TEMPFAIL, f"cannot store the mail: {exc}")
    return EX_OK


def _read(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes (short only at end of input)."""
    parts = []
    wanted = size
    while wanted > 0:
        chunk = stream.read(wanted)
        if not chunk:
            break
        parts.append(chunk)
        wanted -= len(chunk)
    return b"".join(parts)


def _chunks(first: bytes, stream: BinaryIO) -> Iterator[bytes]:
    yield first
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return
        yield chunk


def _fail(code: int, message: str) -> int:
    print(f"busgate mail: {message}", file=sys.stderr)
    return code


def _dry_run(args: argparse.Namespace, stdin: BinaryIO) -> int:
    """Parse and print; exit 0 even with no event, 65 for unreadable input."""
    from gateway.cli import load_settings

    settings = load_settings(args)
    limit = settings.mail.max_size
    try:
        raw = _read(stdin, limit + 1)
    except OSError as exc:
        return _fail(EX_DATAERR, f"cannot read the mail from stdin: {exc}")
    if not raw.strip():
        return _fail(EX_DATAERR, "no mail on stdin (empty input)")
    if len(raw) > limit:
        total = len(raw)
        while chunk := stdin.read(CHUNK):  # drain, so the writer does not get SIGPIPE
            total += len(chunk)
        print(f"busgate mail: {total} bytes, over mail.max_size ({limit}); the daemon "
              "would keep it in quarantine as oversize", file=sys.stderr)
        return EX_OK
    from adapters.mail import parse_mail
    from gateway.dryrun import print_events

    try:
        events = parse_mail(raw, settings)
    except Exception as exc:  # what the daemon would quarantine, said plainly
        return _fail(EX_DATAERR, f"the mail cannot be parsed (the daemon would quarantine "
                                 f"it): {type(exc).__name__}: {exc}")
    if not events:
        print("busgate mail: no known event in this mail (the daemon would keep it as "
              "unrecognized)", file=sys.stderr)
    print_events(events, settings.topic_prefix)
    return EX_OK
