"""The one plug-in point for sources: descriptors found through entry points.

Each adapter package declares one :class:`Source` and registers it under the
``busgate.sources`` entry point group (``name = package.module:SOURCE``), so a
third-party distribution adds a source without editing busgate. The core knows
sources only through this registry: their settings sections, how each is fed
(spool kinds it parses, a poller, mail it claims, commands such as a hook), and
their message types. Nothing under ``gateway/`` imports ``adapters``.

Descriptors are plain data with ``"module:attribute"`` strings for everything
heavy, so loading the registry imports only the descriptor modules and the
settings dataclasses; a parser, poller or command is imported when it is used.
The registry is read once per process, lazily: the MTA pipe (``busgate mail
--spool``) never reads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConfigError

ENTRY_POINT_GROUP = "busgate.sources"


def resolve(target: str) -> Any:
    """``"package.module:attribute"`` -> the attribute (imported now)."""
    module, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split(".") if attribute else ():
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class PollerSpec:
    """A source fed by polling. Its settings section has ``enabled``, ``interval`` and
    ``schedule`` (a crontab line, or ""), which the core schedules by."""

    #: ``"module:function"``; ``function(settings, options) -> Poller`` where ``options``
    #: is the ``busgate poll NAME`` argparse namespace, or None inside ``busgate run``.
    factory: str
    #: ``"module:function"``; ``function(parser)`` adds the source's own ``busgate poll
    #: NAME`` options (the core adds ``--once``, ``--dry-run``, ``--config``).
    add_arguments: str | None = None
    #: One line for ``busgate poll --help``.
    help: str = ""


@dataclass(frozen=True)
class MailSpec:
    """A source fed by mail (the ``mail`` spool kind, routed by the mail front)."""

    #: ``"module:function"``; ``function(message) -> bool``: is this mail ours?
    claims: str
    #: ``"module:function"``; ``function(message, raw, settings) -> list[Event]``.
    parse: str
    #: Mail fronts ask sources in ascending priority; the first that claims a mail gets it.
    priority: int = 100


@dataclass(frozen=True)
class CommandSpec:
    """A ``busgate <name>`` command a source adds (e.g. a hook such as ``git-hook``).
    The module defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""

    name: str
    module: str


@dataclass(frozen=True)
class Source:
    #: Source name: ``busgate poll NAME``, logs, counters (e.g. ``wanna-build``).
    name: str
    #: Its TOML table (e.g. ``wannabuild``); unknown keys in it are refused.
    section: str
    #: Frozen dataclass of the section, with working defaults and a ``#:`` comment per
    #: field (documented in ``conf/busgate.toml``).
    settings: type
    #: ``function(section, settings)``: raise :class:`ConfigError` with ``key`` =
    #: ``"<section>.<field>"`` for what ``busgate run`` would refuse (``check-config``
    #: calls it too). Called for every source, enabled or not; check what applies.
    validate: Callable[[Any, Any], None] | None = None
    #: Spool item kinds this source parses: kind -> ``"module:function"``;
    #: ``function(raw: bytes, settings) -> list[Event]``.
    spool_kinds: Mapping[str, str] = field(default_factory=dict)
    poller: PollerSpec | None = None
    mail: MailSpec | None = None
    commands: tuple[CommandSpec, ...] = ()
    #: ``"module:attribute"`` -> list of :class:`gateway.messages.Message` subclasses.
    messages: str | None = None
    #: ``function(section) -> {type: tokens}``: topic tokens a type has in this deployment
    #: when they depend on settings (e.g. ``git.service``).
    topic_overrides: Callable[[Any], Mapping[type, tuple[str, ...]]] | None = None
    #: One line for ``check-config`` and docs.
    description: str = ""


class RegistryError(ConfigError):
    """A registered source is broken (cannot be imported, clashes with another)."""


_registry: dict[str, Source] | None = None


def registry() -> dict[str, Source]:
    """Every registered source by name, read once per process (entry points)."""
    global _registry
    if _registry is None:
        from importlib.metadata import entry_points

        found: dict[str, Source] = {}
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                source = point.load()
            except Exception as exc:
                raise RegistryError(f"source {point.name!r} ({point.value}) cannot be "
                                    f"loaded: {exc}") from exc
            if not isinstance(source, Source):
                raise RegistryError(f"entry point {point.name!r} ({point.value}) is not a "
                                    "gateway.sources.Source")
            if source.name in found:
                raise RegistryError(f"two sources are named {source.name!r}")
            found[source.name] = source
        _registry = found
    return _registry


def reset() -> None:
    """Forget the registry (tests that install a source)."""
    global _registry
    _registry = None


def type_index(settings: Any) -> Any:
    """The :class:`gateway.messages.TypeIndex` of every registered source's message types,
    with the topic tokens they have under ``settings``."""
    from gateway.messages import TypeIndex

    types: list[type] = []
    overrides: dict[type, tuple[str, ...]] = {}
    for source in registry().values():
        if source.messages:
            types += list(resolve(source.messages))
        if source.topic_overrides is not None and settings is not None:
            overrides.update(source.topic_overrides(getattr(settings, source.section)))
    return TypeIndex(types, overrides)
