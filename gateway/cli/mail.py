"""``busgate mail``: the MTA pipe. One RFC 822 mail on stdin -> the spool, durably.

Exit codes follow sysexits(3), which every MTA understands:

- 0 only once the mail is fsync'd in the spool (the daemon need not run);
- 75 (EX_TEMPFAIL) when it cannot be stored: spool unwritable, disk full, a
  read error, *and* an unreadable configuration (the MTA keeps the mail queued
  and retries while the administrator fixes it, instead of bouncing it);
- 65 (EX_DATAERR) for empty input, the one thing that is not a mail at all.

``--spool DIR`` names the daemon's spool directly, so the configuration is not
read at all (the fastest pipe); the directory must already be a spool.

Mail is streamed in chunks, never held in memory. Once it passes ``mail.max_size``
(``--max-size`` with ``--spool``, default 20 MiB) storing stops: the rest is read
and counted, and the spool gets a small ``oversize`` item (size, limit, the first
``quarantine.oversize_keep_bytes``) that the daemon keeps in quarantine as
``oversize``. The exit is 0 (the MTA must not retry what will never fit, and the
round-one contract keeps oversize mail in quarantine rather than bouncing it),
with the reason on stderr. This path imports only the config loader and the
spool; parsing happens in the daemon.
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

    from gateway.spool import Spool

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
    parser.add_argument("--max-size", metavar="BYTES", type=int,
                        help="with --spool: mail.max_size of the daemon (default 20 MiB); "
                             "a larger mail is kept in quarantine as oversize")


def parse_fast(argv: list[str]) -> SimpleNamespace | None:
    """The options of :func:`add_arguments`, read without argparse (or getopt, which
    imports gettext): a few milliseconds on every archive mail. ``None`` hands the
    command line to argparse (help, an unknown option, a stray argument)."""
    args = SimpleNamespace(dry_run=False, spool=None, config=None, max_size=None)
    words = iter(argv)
    for word in words:
        name, eq, value = word.partition("=")
        if word == "--dry-run":
            args.dry_run = True
        elif name in ("--spool", "--config", "--max-size"):
            value = value if eq else next(words, "")
            if not value or value.startswith("-"):
                return None
            if name == "--max-size":
                if not value.isdigit():
                    return None
                args.max_size = int(value)
            else:
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
    from gateway.spool import MAIL_MAX_SIZE, OVERSIZE_KEEP, Spool

    limit = getattr(args, "max_size", None) or MAIL_MAX_SIZE
    keep = OVERSIZE_KEEP
    if args.spool:
        # No configuration to parse (tomllib alone costs more than the interpreter's
        # start). The directory must carry the mark of `busgate run` (checked below): a
        # typo then keeps the mail with the MTA instead of in a spool no daemon reads.
        spool = Spool(args.spool)
    else:
        try:
            from gateway import config

            settings = config.load(args.config, sources=False)  # no source registry here
        except ConfigError as exc:
            return _fail(EX_TEMPFAIL, f"configuration error, mail left with the MTA: {exc}")
        # What gateway.runtime.open_spool(settings) builds, without importing the store.
        spool = Spool(settings.spool_dir)
        limit, keep = settings.mail.max_size, settings.quarantine.oversize_keep_bytes
    if not spool.is_marked():  # one stat
        from gateway.mark import unmarked_spool_message

        return _fail(EX_TEMPFAIL, f"{unmarked_spool_message(spool._root)}; mail left with "
                                  "the MTA")
    stream = _Bounded(first, stdin, limit, keep)
    try:
        spool.deliver("mail", stream)
    except _Oversize:
        return _store_oversize(spool, stream, stdin, limit)
    except (SpoolError, OSError) as exc:
        return _fail(EX_TEMPFAIL, f"cannot store the mail: {exc}")
    return EX_OK


class _Oversize(Exception):
    """The mail passed its size limit while being stored."""


class _Bounded:
    """The mail's chunks, stopping with :class:`_Oversize` once past ``limit`` bytes,
    keeping the first ``keep`` bytes for the quarantine record."""

    def __init__(self, first: bytes, stream: BinaryIO, limit: int, keep: int):
        self.first, self.stream, self.limit, self.keep = first, stream, limit, keep
        self.total = 0
        self.head = b""

    def __iter__(self) -> Iterator[bytes]:
        for chunk in _chunks(self.first, self.stream):
            self.total += len(chunk)
            if len(self.head) < self.keep:
                self.head += chunk[:self.keep - len(self.head)]
            if self.total > self.limit:
                raise _Oversize
            yield chunk


def _store_oversize(spool: Spool, stream: _Bounded, stdin: BinaryIO, limit: int) -> int:
    """Read the rest (counted, not kept) and spool the bounded ``oversize`` record."""
    import json

    from gateway.errors import SpoolError

    total = stream.total
    try:
        while chunk := stdin.read(CHUNK):
            total += len(chunk)
    except OSError as exc:
        return _fail(EX_TEMPFAIL, f"cannot read the mail from stdin: {exc}")
    meta = json.dumps({"kind": "mail", "size": total, "limit": limit}).encode()
    try:
        spool.deliver("oversize", meta + b"\n" + stream.head)
    except (SpoolError, OSError) as exc:
        return _fail(EX_TEMPFAIL, f"cannot store the mail: {exc}")
    print(f"busgate mail: {total} bytes, over mail.max_size ({limit}): not parsed; kept in "
          f"quarantine as oversize with its first {len(stream.head)} bytes", file=sys.stderr)
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
    """Decide as the daemon would (:func:`gateway.ingest.decide`: size, parse, validate)
    and print the events; exit 0 with events, none, or an oversize mail; 65 for a mail
    the daemon would quarantine as unparsable or invalid."""
    from gateway.cli import load_settings

    settings = load_settings(args)
    limit = settings.mail.max_size
    try:
        raw = _read(stdin, limit + 1)
    except OSError as exc:
        return _fail(EX_DATAERR, f"cannot read the mail from stdin: {exc}")
    if not raw.strip():
        return _fail(EX_DATAERR, "no mail on stdin (empty input)")
    from gateway import ingest, runtime
    from gateway.dryrun import print_events

    decision = ingest.decide(settings, "mail", raw, runtime.type_index(settings))
    if decision.reason == "oversize":
        total = len(raw)
        while chunk := stdin.read(CHUNK):  # drain, so the writer does not get SIGPIPE
            total += len(chunk)
        print(f"busgate mail: {total} bytes, over mail.max_size ({limit}); the daemon "
              "would keep it in quarantine as oversize", file=sys.stderr)
        return EX_OK
    if decision.reason == "unrecognized":
        print("busgate mail: no known event in this mail (the daemon would keep it as "
              "unrecognized)", file=sys.stderr)
        return EX_OK
    if decision.reason == "error":  # what the daemon would quarantine, said plainly
        return _fail(EX_DATAERR, "the mail cannot be parsed (the daemon would quarantine "
                                 f"it): {decision.error}")
    if decision.reason is not None:
        return _fail(EX_DATAERR, f"the daemon would keep this mail in quarantine as "
                                 f"{decision.reason}: {decision.error}")
    print_events(decision.events, settings.topic_prefix)
    return EX_OK
