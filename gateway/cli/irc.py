"""``busgate irc``: relay the bus to IRC channels, one coloured line per message.

The consumer (:class:`gateway.consumer.Consumer`: signatures, filters, resume) and the IRC
connection (:class:`gateway.ircrelay.Relay`) share one thread: the consumer is read in
short slices and the IRC reactor in between, so PINGs are answered and queued lines go
out at their pace while the bus is busy. The relay keeps its position (consumer
``--name``, in the state directory): a restarted relay resumes where it stopped, and a
backlog goes through flood control like any burst. A message counts as relayed once
it is queued for its channels: lines still waiting for their flood budget when the
relay stops are not said after the restart (IRC is a live feed; the bus keeps them).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from typing import Any

HELP = "relay the bus to IRC channels (one line per message, flood-controlled)"

#: Seconds the consumer is read before the IRC connection is served again.
SLICE = 0.2

log = logging.getLogger("gateway.irc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="irc", metavar="NAME",
                        help="consumer name: the position file <state dir>/NAME.sqlite "
                             "(default: irc)")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="directory of the position file (default: [state] dir)")
    parser.add_argument("--no-resume", action="store_true",
                        help="start at now instead of resuming after the last message "
                             "relayed")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="stop after S seconds (tests, smoke checks)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("--log-format", choices=("text", "json"),
                        help="log lines as text or JSON objects (default: [log] format; "
                             "given, it also sets [log] config aside)")


def run(args: argparse.Namespace) -> int:
    from gateway import discovery, display, logsetup, optional, sources
    from gateway.cli import load_settings
    from gateway.consumer import Consumer, Filters

    optional.require("irc", "busgate irc")
    from gateway.ircrelay import Relay
    from gateway.ircroute import Router, line

    settings = load_settings(args)
    logsetup.configure(args.log_format or settings.log.format,
                       "" if args.log_format else settings.log.config, args.verbose)
    conf = settings.irc
    router = Router.from_settings(conf, settings.topic_prefix)
    channels = router.channels
    if not channels:
        print("busgate irc: no channels configured ([irc] channels or [[irc.routes]])",
              file=sys.stderr)
        return 2
    endpoints = discovery.discover(settings)
    if not endpoints:
        print("busgate irc: no endpoints configured (see [discovery])", file=sys.stderr)
        return 2
    index = sources.type_index(settings)
    relay = Relay(conf, channels)

    def relay_one(delivery: Any) -> None:
        targets = router.channels_for(delivery.envelope, index)
        if targets:
            text = line(delivery.envelope, display.describe(delivery.envelope, index),
                        conf.max_line_bytes)
            for channel in targets:
                relay.offer(channel, text)

    stopping: list[int] = []
    # SIGTERM (systemd, the tests) ends the loop like ^C: QUIT sent, position kept.
    signal.signal(signal.SIGTERM, lambda number, frame: stopping.append(number))
    state_dir = args.state_dir or settings.state_dir
    resume = {} if args.no_resume else {"name": args.name, "state_dir": state_dir}
    deadline = time.monotonic() + args.timeout if args.timeout is not None else None
    try:
        # subscribe only to what some route may want (all, when one has no topics)
        filters = Filters(topics=router.topics)
        with Consumer(settings, filters=filters, index=index, endpoints=endpoints,
                      on_reject=_rejected, **resume) as consumer:
            while not stopping and (deadline is None or time.monotonic() < deadline):
                consumer.run(relay_one, timeout=SLICE)
                relay.step(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        relay.close()
        stats = relay.throttle.stats
        log.info("irc: %d lines sent, %d messages folded into %d overflow lines, %d "
                 "connections", stats.sent, stats.folded, stats.overflow_lines,
                 relay.connects)
    return 0


def _rejected(endpoint: Any, envelope: dict[str, Any], error: Exception) -> None:
    log.warning("irc: rejected %s from %s: %s", str(envelope.get("topic"))[:255],
                endpoint.publish, " ".join(str(error).split())[:300])
