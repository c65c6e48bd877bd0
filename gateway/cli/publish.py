"""``busgate publish``: the shell's way onto the bus (busgate's fedmsg-logger).

Messages go into the spool as durable items and the command exits: it never
binds a socket and never sleeps for slow joiners. The daemon publishes them.
"""

from __future__ import annotations

import argparse
import json
import select
import sys
import uuid
from collections.abc import Iterator

HELP = "publish messages from the shell (one per stdin line, or --message)"
EX_DATAERR = 65
EX_TEMPFAIL = 75
#: Most messages in one spool item.
CHUNK = 10000


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


def run(args: argparse.Namespace) -> int:
    from gateway.cli import load_settings
    from gateway.errors import BusgateError, SpoolError
    from gateway.event import Event
    from gateway.runtime import open_spool

    tokens = args.topic.split(".")
    if not 2 <= len(tokens) <= 3:
        print(f"busgate publish: --topic {args.topic!r} must be <object>[.<subobject>].<event>",
              file=sys.stderr)
        return EX_DATAERR
    from gateway import heartbeat

    if heartbeat.is_reserved(args.modname, tokens):
        print(f"busgate publish: {args.modname}.{args.topic} is the publisher's heartbeat "
              "topic, which only the daemon sends", file=sys.stderr)
        return EX_DATAERR
    settings = load_settings(args)
    lines = [args.message] if args.message is not None else _stdin_lines()
    spool = open_spool(settings)
    pending: list[bytes] = []
    stored = 0

    def hand_over() -> None:
        nonlocal stored
        if pending:
            spool.deliver("events", pending)
            stored += len(pending)
            pending.clear()

    try:
        # Validate the topic once; every message of this run shares it. Keys are this
        # run's uuid plus a counter: unique, and stable if the daemon reads an item twice.
        template = Event(
            service=args.modname, object=tokens[0],
            subobject=tokens[1] if len(tokens) == 3 else None, event=tokens[-1],
            key="template", body={},
        ).to_dict()
        run_id = uuid.uuid4()
        encode = json.JSONEncoder(separators=(",", ":")).encode
        for number, body in enumerate(_bodies(lines, args.json_input)):
            template["key"] = f"publish:{run_id}:{number}"
            template["body"] = body
            pending.append(encode(template).encode() + b"\n")
            # One spool item per CHUNK lines, or sooner when stdin has nothing more for
            # now: a stream (`tail -f log | busgate publish`) is published as it comes,
            # and a big input is published while the rest is still being read.
            if len(pending) >= CHUNK or (args.message is None and not _input_waiting()):
                hand_over()
        hand_over()
    except SpoolError as exc:
        print(f"busgate publish: {exc} ({stored} message(s) stored before)", file=sys.stderr)
        return EX_TEMPFAIL
    except (BusgateError, ValueError) as exc:
        bad = stored + len(pending) + 1
        try:
            hand_over()  # the good messages before the bad one
        except SpoolError as spool_exc:
            print(f"busgate publish: {spool_exc}", file=sys.stderr)
            return EX_TEMPFAIL
        before = f"; the {stored} before it were stored" if stored else ""
        print(f"busgate publish: message {bad}: {exc}{before}", file=sys.stderr)
        return EX_DATAERR
    return 0


def _input_waiting() -> bool:
    try:
        return bool(select.select([sys.stdin.buffer], [], [], 0)[0])
    except (OSError, ValueError):  # not selectable (e.g. closed): read on
        return True


def _stdin_lines() -> Iterator[str]:
    for line in sys.stdin.buffer:
        text = line.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
        if text:
            yield text


def _bodies(lines, json_input: bool) -> Iterator[object]:  # type: ignore[no-untyped-def]
    for line in lines:
        if not json_input:
            yield {"log": line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")}
            continue
        try:
            body = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ValueError("a JSON body must be an object")
        yield body
