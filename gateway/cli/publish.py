"""``busgate publish``: the shell's way onto the bus (busgate's fedmsg-logger).

Messages go into the spool as durable items and the command exits: it never
binds a socket and never sleeps for slow joiners. The daemon publishes them.

What a failure (exit 75) leaves behind, so that running the same input again
(what an MTA does) neither loses nor doubles a message:

- an input that ends without pausing and has at most ``CHUNK`` lines is ONE
  spool item, written to ``tmp/`` and renamed once at the end: all of it is
  stored or none of it. Its keys are unique to the run, so publishing the same
  text twice on purpose publishes it twice;
- a stream (the input pauses ``FLUSH_AFTER`` seconds before its end, or it has
  more than ``CHUNK`` lines) is handed over piece by piece, each piece all or
  nothing. Each message's key is then derived from the input up to and including
  its line (and modname, topic, --json-input), so the same input sent again adds
  only the messages that were not stored. The same stream sent twice on purpose
  is therefore published once. An input whose items would pass
  ``ingest.max_item_bytes`` (what the spool worker reads at most) is handed over
  the same way.

What the worker would refuse (a topic over ``topics.MAX_TOPIC_BYTES``, a line over
``ingest.max_item_bytes``, JSON nested deeper than ``ingest.max_json_depth`` or
holding NaN/Infinity, a body the schema of the topic's message type refuses) is
refused here first, with exit 65; the checks are :mod:`gateway.publishing`'s, shared
with ``busgate.publish()``.
"""

from __future__ import annotations

import json
import os
import select
import sys
from collections.abc import Iterator
from types import SimpleNamespace

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

HELP = "publish messages from the shell (one per stdin line, or --message)"
EX_DATAERR = 65
EX_TEMPFAIL = 75
#: Most messages in one spool item.
CHUNK = 10000
#: Longest key a message of this command gets ("publish:", a random run id, a counter).
KEY_BYTES = 64
#: Seconds of silence on stdin after which what was read is handed over (a stream).
FLUSH_AFTER = 0.2
READ_SIZE = 1 << 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modname", default="logger",
                        help="service token of the topic (default: logger)")
    parser.add_argument("--topic", default="message.log",
                        help="<object>[.<subobject>].<event> after the service "
                             "(default: message.log)")
    parser.add_argument("--message", metavar="TEXT",
                        help='publish one message {"log": TEXT} instead of reading stdin')
    parser.add_argument("--json-input", action="store_true",
                        help="each stdin line (or --message) is a JSON object used as the body")


#: Options of :func:`add_arguments` that take a value (``--config`` is the command's too).
_VALUED = ("--modname", "--topic", "--message", "--config")


def parse_fast(argv: list[str]) -> SimpleNamespace | None:
    """The options of :func:`add_arguments` (and ``--config``), read without argparse:
    building its parser is a tenth of ``publish --message``'s start-up. ``None`` hands
    the command line to argparse: help, an unknown or abbreviated option, a stray word,
    a value that is empty or starts with ``-`` (argparse's rules for those stay its own)."""
    args = SimpleNamespace(modname="logger", topic="message.log", message=None,
                           json_input=False, config=None)
    words = iter(argv)
    for word in words:
        name, eq, value = word.partition("=")
        if word == "--json-input":
            args.json_input = True
        elif name in _VALUED:
            value = value if eq else next(words, "")
            if not value or value.startswith("-"):
                return None
            setattr(args, name[2:], value)
        else:
            return None
    return args


def run(args: argparse.Namespace) -> int:
    from gateway import canonical, jsonbounds, publishing, runtime
    from gateway.cli import load_settings
    from gateway.errors import BusgateError, SpoolError, TopicError

    tokens = args.topic.split(".")
    try:
        publishing.check_tokens(args.modname, tokens)
    except TopicError as exc:
        if 2 <= len(tokens) <= 3:  # the heartbeat's topic
            print(f"busgate publish: {exc}", file=sys.stderr)
            return EX_DATAERR
        # fedmsg-logger habits (``--topic log``): show the shape with a real example.
        example = f"{tokens[0]}.log" if len(tokens) == 1 and tokens[0] != "log" else "message.log"
        print(f"busgate publish: --topic {args.topic!r} must be {publishing.SHAPE}"
              f", e.g. --topic {example} (the topic becomes "
              f"org.<distribution>.<env>.{args.modname}.{example})", file=sys.stderr)
        return EX_DATAERR
    settings = load_settings(args)
    try:
        # The worker builds the same topic with the same check (topics.MAX_TOPIC_BYTES):
        # a topic it would refuse is refused here, before anything is stored.
        publishing.split_topic(settings.topic_prefix, args.topic, args.modname)
    except TopicError as exc:
        print(f"busgate publish: --modname/--topic: {exc}", file=sys.stderr)
        return EX_DATAERR
    max_item = settings.ingest.max_item_bytes
    max_depth = settings.ingest.max_json_depth
    spool = runtime.open_spool(settings)
    try:
        publishing.require_mark(spool)
    except SpoolError as exc:
        print(f"busgate publish: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    # The type the worker will validate every body against (any JSON object when no
    # registered type claims the topic: then nothing more to check per line).
    message_type = publishing.message_type(runtime.type_index(settings), args.modname, tokens)
    check_body = None if message_type is publishing.Message else publishing.validate_body
    # (input line, encoded body): keyed at hand-over, the line kept for a stream's key
    pending: list[tuple[bytes, bytes]] = []
    pending_bytes = 0
    stored = 0
    streaming = False
    run_id = os.urandom(16).hex()  # (uuid, and its platform import, cost start-up time)
    prefix = None  # a stream's running hash of its input, made at the first stream hand-over

    def hand_over(final: bool) -> None:
        """Store ``pending`` as one spool item (all of it or none of it)."""
        nonlocal stored, streaming, pending_bytes, prefix
        streaming = streaming or not final
        if not pending:
            return
        # One item for the whole input: any unique key will do (nothing is stored on
        # failure, so a retry cannot double). A stream handed over in pieces: the key is
        # the input itself, so a retry stores only what is missing. It is computed here,
        # not per line: an input that is one item (the common case) is never hashed.
        if streaming:
            if prefix is None:
                prefix = _stream_hash(args)
            update, copy = prefix.update, prefix.copy
            keys = []
            for line, _ in pending:
                update(line)
                update(b"\n")
                keys.append(b"publish:" + copy().hexdigest()[:40].encode())
        else:
            keys = [f"publish:{run_id}:{number}".encode()
                    for number in range(stored, stored + len(pending))]
        spool.deliver("events", _batches(head, keys, [body for _, body in pending]))
        stored += len(pending)
        pending.clear()
        pending_bytes = 0

    try:
        # Each spool line is this head plus the key (ASCII, at most KEY_BYTES) and the
        # body, each body encoded once.
        head = publishing.record_head(args.modname, tokens).encode("ascii")
        overhead = len(head) + KEY_BYTES + 20
        if args.message is not None:
            # One line: one item written once, never a stream, so it is keyed by the run
            # and needs no content key (nor hashlib's start-up cost).
            source = [(args.message.encode("utf-8", "surrogateescape"), False)]
        else:
            source = _stdin_lines(FLUSH_AFTER, max_item)
        json_input, single = args.json_input, args.message is not None
        for line, paused in source:
            if json_input:
                parsed, float_free = _json_body(line, max_depth, jsonbounds.loads_flagged)
            else:
                parsed, float_free = {"log": line.decode("utf-8", "replace")}, True
            if check_body is not None:
                check_body(message_type, parsed)
            if single:  # one body: the reference encoder, without orjson's import
                body = canonical.STDLIB.encode(parsed).encode("ascii")
            else:  # orjson; without a second look for floats when parsing found none
                body = (canonical.dumps_float_free_bytes(parsed) if float_free
                        else canonical.dumps(parsed).encode("ascii"))
            size = overhead + len(body)
            if size > max_item:
                raise ValueError(f"{size} bytes, over ingest.max_item_bytes ({max_item})")
            if pending_bytes + size > max_item:
                hand_over(final=False)  # one spool item stays within what the worker reads
            pending.append((line, body))
            pending_bytes += size
            # A stream (`tail -f log | busgate publish`) is published as it comes, and a
            # big input while the rest is still being read: one item per CHUNK lines, or
            # when the input pauses for FLUSH_AFTER seconds.
            if len(pending) >= CHUNK or paused:
                hand_over(final=False)
        hand_over(final=True)
    except SpoolError as exc:
        kept = (f"{stored} message(s) stored before; the same input again stores only the "
                "rest" if stored else "nothing stored")
        print(f"busgate publish: {exc} ({kept})", file=sys.stderr)
        return EX_TEMPFAIL
    except (BusgateError, ValueError) as exc:
        bad = stored + len(pending) + 1
        try:
            hand_over(final=True)  # the good messages before the bad one
        except SpoolError as spool_exc:
            print(f"busgate publish: {spool_exc}", file=sys.stderr)
            return EX_TEMPFAIL
        before = f"; the {stored} before it were stored" if stored else ""
        print(f"busgate publish: message {bad}: {exc}{before}", file=sys.stderr)
        return EX_DATAERR
    return 0


def _stdin_lines(pause: float, limit: int) -> Iterator[tuple[bytes, bool]]:
    """Non-empty stdin lines, each with whether the input paused after it (nothing more
    within ``pause`` seconds, end of input not reached). Reads the descriptor itself:
    lines buffered inside ``sys.stdin`` would be invisible to ``select``. A line over
    ``limit`` bytes is an error found once ``limit`` bytes are held, not at the end."""
    fd = sys.stdin.fileno()
    rest = b""
    while True:
        chunk = os.read(fd, READ_SIZE)
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        if len(rest) > limit or any(len(line) > limit for line in lines):
            raise ValueError(f"line longer than ingest.max_item_bytes ({limit})")
        lines = [line.rstrip(b"\r") for line in lines]
        lines = [line for line in lines if line]
        for line in lines[:-1]:
            yield line, False
        if lines:
            yield lines[-1], not _readable(fd, pause)
    rest = rest.rstrip(b"\r")
    if rest:
        yield rest, False


def _readable(fd: int, timeout: float) -> bool:
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    except (OSError, ValueError):  # not selectable: read on
        return True


def _json_body(line: bytes, max_depth: int,
               loads_flagged: Callable[..., tuple[Any, bool]]) -> tuple[dict[str, Any], bool]:
    """The body of one ``--json-input`` line, and whether it is known to hold no float.
    The bytes are parsed as they are; a line that is not UTF-8 is read as before
    (undecodable bytes kept as surrogates, which the encoder escapes)."""
    try:
        body, float_free = loads_flagged(line, max_depth, "surrogateescape")
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("a JSON body must be an object")
    return body, float_free


def _stream_hash(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The hash a stream's content keys continue (hashlib, OpenSSL, imported only here)."""
    import hashlib

    return hashlib.sha256(f"{args.modname}\0{args.topic}\0{args.json_input}\0".encode())


#: Bytes of spool lines joined into one write (not one system call per message).
WRITE_BATCH = 1 << 20


def _batches(head: bytes, keys: list[bytes], bodies: list[bytes]) -> Iterator[bytes]:
    """The item's lines (as :func:`gateway.publishing.line` writes them: ``head``, the
    key, the body), joined into writes of about :data:`WRITE_BATCH` bytes."""
    parts: list[bytes] = []
    size = 0
    key_at, body_at, end = b',"key":"', b'","body":', b"}\n"
    fixed = len(head) + len(key_at) + len(body_at) + len(end)
    for key, body in zip(keys, bodies, strict=True):
        parts += (head, key_at, key, body_at, body, end)
        size += fixed + len(key) + len(body)
        if size >= WRITE_BATCH:
            yield b"".join(parts)
            parts.clear()
            size = 0
    if parts:
        yield b"".join(parts)
