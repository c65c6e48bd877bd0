"""``busgate notify``: desktop notifications for the packages and people a developer follows.

What to follow is the user's own TOML (:mod:`gateway.notify_rules`); the bus comes from
``--config`` (discovery, signing, ``[amqp]``) plus the rules' ``[bus]``. Each followed
message becomes one ``org.freedesktop.Notifications.Notify`` call on the session bus
(:mod:`gateway.desktop`): its summary, its topic and link as the body, an urgency from
its severity; :class:`gateway.notifying.Desk` bounds the rate and rides out a missing
notification server.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

HELP = "desktop notifications (D-Bus) for the packages and people you follow"

log = logging.getLogger("busgate.notify")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", metavar="PATH",
                        help="your notify.toml (default: $XDG_CONFIG_HOME/busgate/notify.toml,"
                             " else ~/.config/busgate/notify.toml)")
    parser.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--check", action="store_true",
                        help="read the rules, print what is followed, and exit")


def run(args: argparse.Namespace) -> int:
    from gateway import notify_rules
    from gateway.cli import load_settings

    logging.basicConfig(level=logging.INFO, format="busgate notify: %(message)s",
                        stream=sys.stderr)
    settings = load_settings(args)
    path = Path(args.rules) if args.rules else notify_rules.default_path()
    rules = notify_rules.load(path, settings.topic_prefix)
    if args.check:
        print(f"rules: {path}\npackages: {', '.join(sorted(rules.packages)) or '-'}\n"
              f"users: {', '.join(sorted(rules.users)) or '-'}\n"
              f"topics: {', '.join(rules.topics) or '-'}\n"
              f"exclude: {', '.join(rules.exclude) or '-'}\n"
              f"max_per_minute: {rules.max_per_minute}")
        return 0
    return follow(args, settings, rules)


def _endpoints(settings: Any, rules: Any) -> list[Any]:
    from gateway import discovery

    found = discovery.discover(settings)
    for number, spec in enumerate(rules.endpoints, 1):
        publish, _, replay = spec.partition(",")
        found.append(discovery.Endpoint(f"notify-{number}", publish, replay or None))
    return found


def follow(args: argparse.Namespace, settings: Any, rules: Any) -> int:
    from gateway import display, msgfilter, sources
    from gateway.consumer import Consumer, Filters
    from gateway.consumer_state import PositionError
    from gateway.desktop import Notifier
    from gateway.messages import SEVERITY_HEADER
    from gateway.notifying import Desk, note_for

    index = sources.type_index(settings)
    users = msgfilter.NameFilter(users=rules.users) if rules.users else None
    packages = msgfilter.NameFilter(packages=rules.packages) if rules.packages else None
    expire_ms = rules.expire_seconds * 1000 or -1
    desk = Desk(Notifier(), rules.max_per_minute, expire_ms=expire_ms)

    def followed(envelope: dict[str, Any], message: Any) -> bool:
        topic = str(envelope.get("topic", ""))
        return (any(topic.startswith(t) for t in rules.topics)
                or (users is not None and users.matches(envelope, message))
                or (packages is not None and packages.matches(envelope, message)))

    def handle(delivery: Any) -> None:
        envelope = delivery.envelope
        description = display.describe(envelope, index)
        if not followed(envelope, description.message):
            return
        headers = envelope.get("headers")
        severity = headers.get(SEVERITY_HEADER) if isinstance(headers, dict) else None
        if type(severity) is not int:
            severity = description.message.severity
        service = display.topic_tail(delivery.topic).split(".", 1)[0]
        desk.offer(note_for(envelope, description, rules.urgency_for(severity), expire_ms),
                   service[:64])

    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") \
        / "busgate"
    kwargs: dict[str, Any] = {"amqp_queue": rules.amqp_queue} if rules.amqp_queue else {
        "endpoints": _endpoints(settings, rules)}
    if not rules.amqp_queue and not kwargs["endpoints"]:
        print("busgate notify: no endpoints (set [bus] endpoints in the rules, or "
              "[discovery] in --config)", file=sys.stderr)
        return 2
    if rules.resume and not rules.amqp_queue:
        kwargs.update(name="notify", state_dir=state)
    deadline = time.monotonic() + args.timeout if args.timeout is not None else None
    consumer = Consumer(settings, filters=Filters(exclude=rules.exclude), index=index,
                        **kwargs)
    try:
        with consumer:
            # said once subscribed (the AMQP queue declared): from here nothing is missed
            log.info("following %d package(s), %d user(s), %d topic(s) from %s",
                     len(rules.packages), len(rules.users), len(rules.topics),
                     f"AMQP queue {rules.amqp_queue}" if rules.amqp_queue else
                     ", ".join(e.publish for e in kwargs["endpoints"]))
            while deadline is None or time.monotonic() < deadline:
                slice_ = 0.5 if deadline is None else max(0.0, min(0.5, deadline
                                                                    - time.monotonic()))
                consumer.run(handle, timeout=slice_)
                desk.tick()  # a due summary, a retry
    except KeyboardInterrupt:
        pass
    except (*_bus_errors(), PositionError) as exc:
        where = f"AMQP queue {rules.amqp_queue!r}" if rules.amqp_queue else "the bus"
        print(f"busgate notify: {where}: {exc or type(exc).__name__}", file=sys.stderr)
        return 69
    finally:
        desk.notifier.close()
        log.info("stopped: %s", " ".join(f"{k}={v}" for k, v in
                                         {**desk.stats.as_dict(),
                                          **consumer.counters.as_dict()}.items()))
    return 0


def _bus_errors() -> tuple[type[BaseException], ...]:
    """What a broker that cannot be reached raises (as ``busgate tail --amqp`` reports)."""
    from gateway.transports.amqp import CONNECTION_ERRORS, AmqpError

    return (*CONNECTION_ERRORS, AmqpError)
