"""``busgate tail``: watch the bus (busgate's fedmsg-tail), with gap repair by replay."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

HELP = "watch the bus: print messages from every configured publisher"

_COLOURS = {"topic": "\033[1;34m", "meta": "\033[2m", "replayed": "\033[33m", "reset": "\033[0m"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", action="append", default=[], metavar="PREFIX",
                        help="only topics starting with PREFIX (repeatable)")
    parser.add_argument("--exclude", action="append", default=[], metavar="PREFIX",
                        help="skip topics starting with PREFIX (repeatable)")
    style = parser.add_mutually_exclusive_group()
    style.add_argument("--json", dest="style", action="store_const", const="json",
                       help="one envelope per line as JSON (default)")
    style.add_argument("--pretty", dest="style", action="store_const", const="pretty",
                       help="coloured, human-readable")
    style.add_argument("--terse", dest="style", action="store_const", const="terse",
                       help="one short line per message")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    parser.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--endpoint", action="append", default=[], metavar="PUB[,REPLAY]",
                        help="also subscribe to this publisher (repeatable)")
    parser.add_argument("--heartbeats", action="store_true", help="print heartbeats too")
    parser.add_argument("--silence", type=float, metavar="S",
                        help="warn on stderr when no publisher has answered for S seconds "
                             "(default: 3 heartbeat intervals, at least 15)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    parser.set_defaults(style="json")


def run(args: argparse.Namespace) -> int:
    from gateway import discovery, heartbeat, verify
    from gateway import endpoints as endpoints_grammar
    from gateway.cli import load_settings
    from gateway.subscriber import Subscriber

    settings = load_settings(args)
    verifier = verify.from_settings(settings.signing)
    endpoints = discovery.discover(settings)
    for number, spec in enumerate(args.endpoint, 1):
        publish, _, replay_url = spec.partition(",")
        for url in (publish, replay_url) if replay_url else (publish,):
            problem = endpoints_grammar.problem(url)
            if problem:
                print(f"busgate tail: --endpoint: {problem}", file=sys.stderr)
                return 2
        endpoints.append(discovery.Endpoint(f"cli-{number}", publish, replay_url or None))
    if not endpoints:
        print("busgate tail: no endpoints configured (see [discovery] or use --endpoint)",
              file=sys.stderr)
        return 2
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    out = sys.stdout
    # since=now: ask each publisher where it stands, so nothing published from here on is
    # missed (not while connecting, not across a daemon restart).
    with Subscriber(endpoints, topics=args.topic, exclude=args.exclude,
                    heartbeat_topic=heartbeat.topic(settings.topic_prefix),
                    show_heartbeats=args.heartbeats, since=time.time(),
                    verifier=verifier, on_reject=_warn_rejected) as subscriber:
        silence = args.silence if args.silence is not None and args.silence > 0 else max(
            SILENCE_MIN, SILENCE_HEARTBEATS * settings.zmq.heartbeat_interval)
        watch = _SilenceWatch(subscriber, silence, [e.publish for e in endpoints])
        deadline = time.monotonic() + args.timeout if args.timeout is not None else None
        left = args.count
        try:
            while left is None or left > 0:
                # Short slices, so a silent bus is noticed between them; the subscriber
                # keeps its state (tracks, backlog) from one slice to the next.
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                slice_ = 1.0 if deadline is None else min(1.0, deadline - now)
                for message in subscriber.messages(count=left, timeout=slice_):
                    write(out, message.envelope, args.style, replayed=message.replayed,
                          colour=colour)
                    if left is not None:
                        left -= 1
                watch.check()
        except KeyboardInterrupt:
            return 0
    return 0


def _warn_rejected(endpoint: Any, envelope: dict[str, Any], error: Exception) -> None:
    """One line on stderr per message the verifier refused (it is not printed)."""
    topic = str(envelope.get("topic"))[:255]
    seq = envelope.get("seq_id")
    where = f" seq_id {seq}" if type(seq) is int else ""
    detail = " ".join(str(error).split())[:300]
    print(f"busgate tail: rejected {topic}{where} from {endpoint.publish}: {detail}",
          file=sys.stderr, flush=True)


#: ``tail`` warns when no publisher has sent anything (message or heartbeat) for this
#: many heartbeat intervals, and never sooner than SILENCE_MIN seconds.
SILENCE_HEARTBEATS = 3
SILENCE_MIN = 15.0


class _SilenceWatch:
    """Say once on stderr that no publisher answers (and once when one does again), so a
    quiet tail is not mistaken for a quiet bus."""

    def __init__(self, subscriber: Any, silence: float, urls: list[str]):
        self.subscriber = subscriber
        self.silence = silence
        self.urls = urls
        self.warned = False

    def check(self) -> None:
        quiet = time.monotonic() - self.subscriber.last_heard
        if quiet >= self.silence and not self.warned:
            self.warned = True
            print(f"busgate tail: no publisher has answered for {quiet:.0f} s (no message, no "
                  f"heartbeat) on {', '.join(self.urls)}; is the daemon running?",
                  file=sys.stderr, flush=True)
        elif quiet < self.silence and self.warned:
            self.warned = False
            print("busgate tail: a publisher is answering again", file=sys.stderr, flush=True)


def write(out: TextIO, envelope: dict[str, Any], style: str, *, replayed: bool = False,
          colour: bool = False) -> None:
    if style == "json":
        out.write(json.dumps(envelope, sort_keys=True, ensure_ascii=False) + "\n")
    elif style == "terse":
        out.write(_terse(envelope) + "\n")
    else:
        out.write(_pretty(envelope, replayed, colour) + "\n")
    out.flush()


def _clock(envelope: dict[str, Any]) -> str:
    stamp = envelope.get("timestamp")
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "?"


def _terse(envelope: dict[str, Any]) -> str:
    body = envelope.get("msg")
    if isinstance(body, dict):
        parts = [f"{k}={v}" for k, v in body.items()
                 if isinstance(v, str | int | float) and not isinstance(v, bool)][:4]
        summary = " ".join(parts)
    else:
        summary = json.dumps(body, ensure_ascii=False)
    if len(summary) > 160:
        summary = summary[:157] + "..."
    return f"{_clock(envelope)} {envelope.get('topic')} {summary}"


def _pretty(envelope: dict[str, Any], replayed: bool, colour: bool) -> str:
    c = _COLOURS if colour else dict.fromkeys(_COLOURS, "")
    seq = envelope.get("seq_id")
    meta = f"{envelope.get('publisher', '?')}#{seq}" if seq is not None else "unsequenced"
    head = (f"{c['meta']}{_clock(envelope)}{c['reset']} {c['topic']}{envelope.get('topic')}"
            f"{c['reset']} {c['meta']}({meta}, {envelope.get('msg_id')}){c['reset']}")
    if replayed:
        head += f" {c['replayed']}[replayed]{c['reset']}"
    body = json.dumps(envelope.get("msg"), indent=2, sort_keys=True, ensure_ascii=False)
    return head + "\n" + "\n".join("    " + line for line in body.splitlines())
