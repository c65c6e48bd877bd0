"""``busgate tail``: watch the bus (busgate's fedmsg-tail), with gap repair by replay."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from gateway.messages import TypeIndex

HELP = "watch the bus: print messages from every configured publisher"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", action="append", default=[], metavar="PREFIX",
                        help="only topics starting with PREFIX (repeatable); without a "
                             "leading 'org.', PREFIX follows the configured "
                             "org.<distribution>.<env>. (e.g. logger.message)")
    parser.add_argument("--exclude", action="append", default=[], metavar="PREFIX",
                        help="skip topics starting with PREFIX (repeatable; as --topic)")
    parser.add_argument("--users", action="append", default=[], metavar="NAME",
                        help="only messages concerning user NAME (repeatable, or "
                             "comma-separated)")
    parser.add_argument("--packages", action="append", default=[], metavar="NAME",
                        help="only messages concerning package NAME (repeatable, or "
                             "comma-separated)")
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
    parser.add_argument("--amqp", metavar="QUEUE",
                        help="consume from this durable RabbitMQ queue ([amqp] url/vhost; "
                             "declared and bound to the exchange unless amqp.passive) "
                             "instead of ZeroMQ; each message is acked once printed")
    parser.add_argument("--silence", type=float, metavar="S",
                        help="warn on stderr when no publisher has answered for S seconds "
                             "(default: 3 heartbeat intervals, at least 15)")
    parser.add_argument("--color", "--colour", nargs="?", const="always", default="auto",
                        choices=("auto", "always", "never"), metavar="WHEN",
                        help="colour the output: auto (a terminal, unless NO_COLOR is set; "
                             "the default), always (also a bare --color) or never")
    parser.set_defaults(style="json")


def run(args: argparse.Namespace, index: TypeIndex | None = None) -> int:
    """Tail the bus; ``index`` (the registry's message types by default) says what each
    message means."""
    from gateway import discovery, sources
    from gateway import display as show
    from gateway import endpoints as endpoints_grammar
    from gateway.cli import load_settings
    from gateway.consumer import Consumer, Filters

    settings = load_settings(args)
    if index is None:
        index = sources.type_index(settings)
    filters = Filters.build(settings.topic_prefix, topics=args.topic, exclude=args.exclude,
                            users=args.users, packages=args.packages)
    if args.amqp:
        return _tail_amqp(args, settings, index, filters)
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
    out = sys.stdout
    colour = show.use_colour(args.color, out)
    # No position: a tail follows each publisher from now on (the consumer asks where
    # each stands), missing nothing published while connecting or across a restart.
    with Consumer(settings, filters=filters, index=index, endpoints=endpoints,
                  heartbeats=args.heartbeats, on_reject=_warn_rejected) as consumer:
        silence = args.silence if args.silence is not None and args.silence > 0 else max(
            SILENCE_MIN, SILENCE_HEARTBEATS * settings.zmq.heartbeat_interval)
        watch = _SilenceWatch(consumer.subscriber, silence, [e.publish for e in endpoints])
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
                for delivery in consumer.messages(count=left, timeout=slice_):
                    write(out, delivery.envelope, args.style, replayed=delivery.replayed,
                          colour=colour, index=index)
                    if left is not None:
                        left -= 1
                watch.check()
        except KeyboardInterrupt:
            return 0
    return 0


def _tail_amqp(args: argparse.Namespace, settings: Any, index: TypeIndex,
               filters: Any) -> int:
    """The same output, filters and types from a RabbitMQ queue (``--amqp QUEUE``)."""
    from gateway import display as show
    from gateway.consumer import Consumer
    from gateway.transports.amqp import CONNECTION_ERRORS, AmqpError, redacted

    colour = show.use_colour(args.color, sys.stdout)
    try:
        with Consumer(settings, filters=filters, index=index, amqp_queue=args.amqp,
                      on_reject=_warn_rejected) as consumer:
            for delivery in consumer.messages(count=args.count, timeout=args.timeout):
                write(sys.stdout, delivery.envelope, args.style, replayed=delivery.replayed,
                      colour=colour, index=index)
    except KeyboardInterrupt:
        return 0
    except (*CONNECTION_ERRORS, AmqpError) as exc:
        print(f"busgate tail: AMQP queue {args.amqp!r} at {redacted(settings.amqp.url)}: "
              f"{exc or type(exc).__name__}", file=sys.stderr)
        return 69
    return 0


def _warn_rejected(endpoint: Any, envelope: dict[str, Any], error: Exception) -> None:
    """One line on stderr per message the verifier refused (it is not printed)."""
    _warn(endpoint.publish, envelope, error)


def _warn(where: str, envelope: dict[str, Any], error: Exception) -> None:
    topic = str(envelope.get("topic"))[:255]
    seq = envelope.get("seq_id")
    seq_text = f" seq_id {seq}" if type(seq) is int else ""
    detail = " ".join(str(error).split())[:300]
    print(f"busgate tail: rejected {topic}{seq_text} from {where}: {detail}",
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
          colour: bool = False, index: TypeIndex | None = None) -> None:
    """Print one message in ``style`` (json, terse or pretty)."""
    from gateway import display as show
    from gateway.messages import TypeIndex

    if style == "json":
        out.write(json.dumps(envelope, sort_keys=True, ensure_ascii=False) + "\n")
    else:
        description = show.describe(envelope, index if index is not None else TypeIndex(()))
        if style == "terse":
            out.write(show.terse(envelope, description, colour) + "\n")
        else:
            out.write(show.pretty(envelope, description, replayed=replayed, colour=colour)
                      + "\n")
    out.flush()
