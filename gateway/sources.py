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

# The descriptors compare by identity (eq=False): a frozen dataclass with eq generates six
# methods at import, without it three, and every git push imports this module.


def resolve(target: str) -> Any:
    """``"package.module:attribute"`` -> the attribute (imported now)."""
    module, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split(".") if attribute else ():
        value = getattr(value, part)
    return value


@dataclass(frozen=True, eq=False)
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


@dataclass(frozen=True, eq=False)
class MailSpec:
    """A source fed by mail (the ``mail`` spool kind, routed by the mail front)."""

    #: ``"module:function"``; ``function(message) -> bool``: is this mail ours?
    claims: str
    #: ``"module:function"``; ``function(message, raw, settings) -> list[Event]``.
    parse: str
    #: Mail fronts ask sources in ascending priority; the first that claims a mail gets it.
    priority: int = 100


@dataclass(frozen=True, eq=False)
class CommandSpec:
    """A ``busgate <name>`` command a source adds (e.g. a hook such as ``git-hook``).
    The module defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""

    name: str
    module: str


@dataclass(frozen=True, eq=False)
class Source:
    """One registered source: its name, settings table and what feeds it."""

    #: Source name: ``busgate poll NAME``, logs, counters (e.g. ``wanna-build``).
    name: str
    #: Its TOML table (e.g. ``wannabuild``); unknown keys in it are refused.
    section: str
    #: Frozen dataclass of the section, with working defaults and a ``#:`` comment per
    #: field (documented in ``conf/busgate.toml``).
    settings: type
    #: ``function(section, settings)``: raise :class:`ConfigError` with ``key`` =
    #: ``"<section>.<field>"`` (the core adds the file) for what ``busgate run`` would
    #: refuse. Loading a file calls it for the tables the file sets; ``check-config`` and
    #: ``run`` for every source, enabled or not (so the defaults must pass it): check what
    #: applies. A poller's ``interval`` and ``schedule`` are checked by the core.
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


#: Where a registered source's distribution is listed (``importlib.metadata`` layouts).
_METADATA_SUFFIXES = (".dist-info", ".egg-info")

_registry: dict[str, Source] | None = None


def registry() -> dict[str, Source]:
    """Every registered source by name, read once per process (entry points).

    Raises :class:`RegistryError` for a source that cannot be loaded, is not a
    :class:`Source`, or has the name or section of another."""
    global _registry
    if _registry is None:
        found: dict[str, Source] = {}
        sections: dict[str, str] = {}
        for name, value in entry_points(ENTRY_POINT_GROUP):
            try:
                source = resolve(value)
            except Exception as exc:
                raise RegistryError(f"source {name!r} ({value}) cannot be loaded: "
                                    f"{type(exc).__name__}: {exc}") from exc
            if not isinstance(source, Source):
                raise RegistryError(f"entry point {name!r} ({value}) is not a "
                                    "gateway.sources.Source")
            if source.name in found:
                raise RegistryError(f"two sources are named {source.name!r} ({value} and "
                                    f"the one registered before it)")
            if source.section in sections:
                raise RegistryError(f"sources {sections[source.section]!r} and "
                                    f"{source.name!r} both claim the [{source.section}] table")
            found[source.name] = source
            sections[source.section] = source.name
        _registry = found
    return _registry


def reset() -> None:
    """Forget the registry (tests that install a source)."""
    global _registry
    _registry = None


def entry_points(group: str) -> list[tuple[str, str]]:
    """``(name, "module:attr")`` of every entry point in ``group``, first distribution
    on ``sys.path`` winning, as :func:`importlib.metadata.entry_points` finds them.

    Why not that function: importing :mod:`importlib.metadata` costs ~25 ms (email,
    zipfile, csv...), paid by every ``busgate git-hook`` run, while reading the few
    ``entry_points.txt`` files of a directory is well under a millisecond. A ``sys.path``
    entry that is a zip archive is read by :mod:`importlib.metadata` after all.
    """
    import os
    import sys

    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in sys.path:
        directory = entry or "."
        try:
            names = os.listdir(directory)
        except NotADirectoryError:
            return _stdlib_entry_points(group)
        except OSError:
            continue
        for folder in names:
            if not folder.endswith(_METADATA_SUFFIXES):
                continue
            dist = _normalized(folder.rpartition(".")[0].partition("-")[0])
            if dist in seen:
                continue
            seen.add(dist)
            try:
                with open(os.path.join(directory, folder, "entry_points.txt"),
                          encoding="utf-8") as handle:
                    text = handle.read()
            except OSError:
                continue
            found += _group(text, group)
    return found


def _normalized(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    import re

    return re.sub(r"[-_.]+", "_", name).lower()


def _group(text: str, group: str) -> list[tuple[str, str]]:
    """The ``name = value`` lines of ``[group]`` in an ``entry_points.txt`` (INI)."""
    lines: list[tuple[str, str]] = []
    inside = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            inside = line[1:-1].strip() == group
        elif inside and "=" in line:
            name, _, value = line.partition("=")
            lines.append((name.strip(), value.strip()))
    return lines


def _stdlib_entry_points(group: str) -> list[tuple[str, str]]:
    from importlib import metadata

    return [(point.name, point.value) for point in metadata.entry_points(group=group)]


# -- lookups ---------------------------------------------------------------------------


def by_name(name: str) -> Source:
    """The source called ``name``; :class:`RegistryError` listing the known ones."""
    sources = registry()
    if name not in sources:
        known = ", ".join(sorted(sources)) or "none"
        raise RegistryError(f"no source named {name!r} (registered: {known})")
    return sources[name]


def by_section(section: str) -> Source | None:
    """The source whose settings live in the ``[section]`` table, if any."""
    for source in registry().values():
        if source.section == section:
            return source
    return None


def sections() -> dict[str, Source]:
    """Settings table name -> source, in registration order."""
    return {source.section: source for source in registry().values()}


def spool_parser(kind: str) -> Callable[[bytes, Any], list[Any]] | None:
    """The parser of spool items of ``kind`` (``function(raw, settings)``), or None."""
    source = spool_kinds().get(kind)
    return resolve(source.spool_kinds[kind]) if source is not None else None


def check(settings: Any = None) -> None:
    """Refuse (:class:`RegistryError`) a registry whose sources clash: names and tables
    (checked on loading), spool kinds, commands, message types (by name or by topic under
    ``settings``). ``check-config`` and ``run`` call it, so a clash stops the daemon at
    start (exit 2) rather than failing on input later."""
    registry()
    spool_kinds()
    commands()
    type_index(settings)


def spool_kinds() -> dict[str, Source]:
    """Spool item kind -> the source that parses it (a kind claimed twice is an error)."""
    kinds: dict[str, Source] = {}
    for source in registry().values():
        for kind in source.spool_kinds:
            if kind in kinds:
                raise RegistryError(f"sources {kinds[kind].name!r} and {source.name!r} both "
                                    f"parse the {kind!r} spool kind")
            kinds[kind] = source
    return kinds


def mail_sources() -> list[Source]:
    """Sources fed by mail, in the order a mail front asks them (priority, then name)."""
    fed = [s for s in registry().values() if s.mail is not None]
    return sorted(fed, key=lambda s: (s.mail.priority, s.name))  # type: ignore[union-attr]


def pollers() -> list[Source]:
    """Every source fed by a poller."""
    return [s for s in registry().values() if s.poller is not None]


def enabled_pollers(settings: Any) -> list[Source]:
    """The polled sources whose settings section says ``enabled``."""
    return [s for s in pollers() if getattr(settings.section(s.section), "enabled", False)]


def make_poller(source: Source, settings: Any, options: Any = None) -> Any:
    """The source's poller for ``settings`` (``options``: ``busgate poll``'s arguments)."""
    assert source.poller is not None, source.name
    return resolve(source.poller.factory)(settings, options)


def commands() -> dict[str, tuple[Source, CommandSpec]]:
    """``busgate`` command name -> (source, spec) for every command a source adds."""
    found: dict[str, tuple[Source, CommandSpec]] = {}
    for source in registry().values():
        for command in source.commands:
            if command.name in found:
                raise RegistryError(f"sources {found[command.name][0].name!r} and "
                                    f"{source.name!r} both add the command {command.name!r}")
            found[command.name] = (source, command)
    return found


def command(name: str) -> CommandSpec | None:
    """The source command called ``name``, or None."""
    entry = commands().get(name)
    return entry[1] if entry else None


def message_types() -> list[type]:
    """Every registered source's message types."""
    types: list[type] = []
    for source in registry().values():
        if source.messages:
            try:
                types += list(resolve(source.messages))
            except Exception as exc:
                raise RegistryError(f"the message types of source {source.name!r} "
                                    f"({source.messages}) cannot be loaded: "
                                    f"{type(exc).__name__}: {exc}") from exc
    return types


def type_index(settings: Any) -> Any:
    """The :class:`gateway.messages.TypeIndex` of every registered source's message types,
    with the topic tokens they have under ``settings`` (``topic_overrides``)."""
    from gateway.messages import TypeIndex

    overrides: dict[type, tuple[str, ...]] = {}
    if settings is not None:
        for source in registry().values():
            if source.topic_overrides is not None:
                overrides.update(source.topic_overrides(settings.section(source.section)))
    try:
        return TypeIndex(message_types(), overrides)
    except ValueError as exc:  # two types with one name or one topic: the sources clash
        raise RegistryError(f"the registered sources' message types clash: {exc}") from None
