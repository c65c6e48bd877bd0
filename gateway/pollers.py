"""The polled sources, as the daemon's scheduler and ``busgate poll`` see them.

Every poller comes from the source registry (:mod:`gateway.sources`): a source with
a :class:`~gateway.sources.PollerSpec`, scheduled by its table's ``enabled``,
``interval`` and ``schedule``. A poll's result is committed by
:func:`gateway.polling.apply`.
"""

from __future__ import annotations

from typing import Any

from gateway import sources
from gateway.config import Settings
from gateway.polling import Poller


def enabled(settings: Settings) -> list[str]:
    """Names of the polled sources enabled in ``settings``."""
    return [source.name for source in sources.enabled_pollers(settings)]


def make(name: str, settings: Settings, options: Any = None) -> Poller:
    """The poller of source ``name`` (``options``: ``busgate poll``'s arguments)."""
    return sources.make_poller(sources.by_name(name), settings, options)


def interval(name: str, settings: Settings) -> float:
    return float(settings.section(sources.by_name(name).section).interval)


def schedule(name: str, settings: Settings) -> str:
    """The poller's crontab line, or "" for every :func:`interval` seconds."""
    return str(getattr(settings.section(sources.by_name(name).section), "schedule", ""))
