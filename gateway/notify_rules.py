"""A developer's own ``busgate notify`` settings: what to follow and how loudly.

Read from ``$XDG_CONFIG_HOME/busgate/notify.toml`` (``~/.config/busgate/notify.toml``)
or ``--rules PATH``. The file is the user's, not the gateway's: it names no state
and no keys, only what this person wants to see::

    # A message is shown when it concerns a followed package OR a followed user, OR
    # its topic starts with a followed topic (without "org.", a topic follows the
    # configured org.<distribution>.<env>.); excluded topics are never shown.
    [follow]
    packages = ["hebcal", "dpkg"]
    users = ["alice"]
    topics = ["debbugs.bug.new"]
    exclude = ["git.push"]

    [notify]
    max_per_minute = 10     # past it: one "N more messages" notification
    expire_seconds = 0      # 0: the notification server's default
    resume = false          # true: after a restart, catch up on what was missed

    # message severity (fedora-messaging's) -> urgency: low, normal or critical
    [urgency]
    debug = "low"
    info = "normal"
    warning = "normal"
    error = "critical"

    [bus]
    endpoints = ["tcp://bus.example.org:9940,tcp://bus.example.org:9941"]
    amqp_queue = ""         # a durable RabbitMQ queue instead ([amqp] of --config)

Every list and number has a bound (below); a file that breaks one, or names a key
this module does not know, is a :class:`~gateway.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import desktop, endpoints
from gateway.errors import ConfigError
from gateway.messages import DEBUG, ERROR, INFO, WARNING

#: Largest rules file read (a list of follows is a few KiB at most).
MAX_FILE_BYTES = 64 * 1024
#: Most entries in each follow list (packages, users, topics, exclude) and endpoints.
MAX_FOLLOWS = 1000
MAX_ENDPOINTS = 32
#: Bounds of ``max_per_minute``: at least one (the summary), at most one a second.
MIN_PER_MINUTE, MAX_PER_MINUTE = 2, 60
#: Longest ``expire_seconds`` (a day).
MAX_EXPIRE_SECONDS = 86400

SEVERITY_NAMES = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR}
DEFAULT_URGENCY = {DEBUG: desktop.LOW, INFO: desktop.NORMAL, WARNING: desktop.NORMAL,
                   ERROR: desktop.CRITICAL}


@dataclass(frozen=True)
class Rules:
    """What one person follows and how notifications behave."""

    packages: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    topics: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_per_minute: int = 10
    expire_seconds: int = 0
    resume: bool = False
    urgency: dict[int, int] = field(default_factory=lambda: dict(DEFAULT_URGENCY))
    endpoints: tuple[str, ...] = ()
    amqp_queue: str = ""
    path: str = ""

    def urgency_for(self, severity: object) -> int:
        """The urgency of a message of ``severity`` (the nearest level at or below it)."""
        level = severity if type(severity) is int else INFO
        known = [s for s in sorted(self.urgency) if s <= level]
        return self.urgency[known[-1]] if known else self.urgency[min(self.urgency)]


def default_path(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/busgate/notify.toml``, ``~/.config/...`` when it is unset."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "busgate" / "notify.toml"


def load(path: str | os.PathLike[str], topic_prefix: str) -> Rules:
    """The rules in ``path``; a missing, oversized or wrong file is a ConfigError."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the notify rules: {exc.strerror} (write one, e.g. "
                          f"'[follow]' then 'packages = [\"hebcal\"]'; README, \"Desktop "
                          f"notifications\")", path=where) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"larger than {MAX_FILE_BYTES} bytes", path=where)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=where) from None
    return parse(raw, topic_prefix, where)


def parse(raw: dict[str, Any], topic_prefix: str, where: str = "") -> Rules:
    from gateway import msgfilter

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(problem, path=where or None, key=key)

    tables = {"follow": {"packages", "users", "topics", "exclude"},
              "notify": {"max_per_minute", "expire_seconds", "resume"},
              "urgency": set(SEVERITY_NAMES), "bus": {"endpoints", "amqp_queue"}}
    for name, value in raw.items():
        if name not in tables:
            raise fail(name, f"unknown table (known: {', '.join(sorted(tables))})")
        if not isinstance(value, dict):
            raise fail(name, "must be a table")
        for key in value:
            if key not in tables[name]:
                raise fail(f"{name}.{key}", f"unknown key (known: "
                           f"{', '.join(sorted(tables[name]))})")
    follow, notify = raw.get("follow", {}), raw.get("notify", {})
    bus, urgency_table = raw.get("bus", {}), raw.get("urgency", {})

    def names(table: dict[str, Any], section: str, key: str, limit: int) -> list[str]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip()
                                                  for v in value):
            raise fail(f"{section}.{key}", "must be a list of non-empty strings")
        if len(value) > limit:
            raise fail(f"{section}.{key}", f"more than {limit} entries")
        return [v.strip() for v in value]

    def number(key: str, default: int, low: int, high: int) -> int:
        value = notify.get(key, default)
        if type(value) is not int or not low <= value <= high:
            raise fail(f"notify.{key}", f"must be an integer from {low} to {high}")
        return value

    packages = msgfilter.split_names(names(follow, "follow", "packages", MAX_FOLLOWS))
    users = msgfilter.split_names(names(follow, "follow", "users", MAX_FOLLOWS))
    topics = tuple(msgfilter.expand_topic(t, topic_prefix)
                   for t in names(follow, "follow", "topics", MAX_FOLLOWS))
    exclude = tuple(msgfilter.expand_topic(t, topic_prefix)
                    for t in names(follow, "follow", "exclude", MAX_FOLLOWS))
    if not (packages or users or topics):
        raise fail("follow", "follows nothing: name packages, users or topics to be "
                   "notified about")
    urgency = dict(DEFAULT_URGENCY)
    for name, value in urgency_table.items():
        if value not in desktop.URGENCIES:
            raise fail(f"urgency.{name}", f"must be one of {', '.join(desktop.URGENCIES)}")
        urgency[SEVERITY_NAMES[name]] = desktop.URGENCIES[value]
    resume = notify.get("resume", False)
    if not isinstance(resume, bool):
        raise fail("notify.resume", "must be true or false")
    specs = names(bus, "bus", "endpoints", MAX_ENDPOINTS)
    for spec in specs:
        for url in spec.split(","):
            problem = endpoints.problem(url)
            if problem:
                raise fail("bus.endpoints", problem)
    queue = bus.get("amqp_queue", "")
    if not isinstance(queue, str) or len(queue) > 255:
        raise fail("bus.amqp_queue", "must be a queue name (at most 255 characters)")
    return Rules(packages=packages, users=users, topics=topics, exclude=exclude,
                 max_per_minute=number("max_per_minute", 10, MIN_PER_MINUTE, MAX_PER_MINUTE),
                 expire_seconds=number("expire_seconds", 0, 0, MAX_EXPIRE_SECONDS),
                 resume=resume, urgency=urgency, endpoints=tuple(specs), amqp_queue=queue,
                 path=where)
