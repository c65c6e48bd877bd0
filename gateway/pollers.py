"""The polled sources, as the daemon's scheduler and ``busgate poll`` see them.

Every poller comes from the source registry (:mod:`gateway.sources`): a source with
a :class:`~gateway.sources.PollerSpec`, scheduled by its table's ``enabled``,
``interval`` and ``schedule``. :func:`poll_once` runs one poll and commits what it
found (unless ``dry_run``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from gateway import sources
from gateway.config import Settings
from gateway.event import Event
from gateway.polling import Poller, PollResult
from gateway.store import Store


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


@dataclass
class Polled:
    """What one poll did: the events found, how many were new in the outbox."""

    events: list[Event]
    added: int
    summary: str = ""


def poll_once(poller: Any, store: Store, *, dry_run: bool = False,
              caps: Any = None) -> Polled:
    """Run one poll; unless ``dry_run``, commit its events and state plan in one
    transaction (:func:`gateway.polling.apply`, quarantine within ``caps``, the
    ``[quarantine]`` settings). Raises what the poller raises."""
    if _legacy(poller):
        # TRANSITIONAL (issue 11): built-in pollers not yet converted to the PollResult
        # contract commit themselves and return the events they added. Removed once every
        # poller returns a PollResult.
        events = list(poller.poll(store, dry_run=dry_run))
        return Polled(events, len(events))
    from gateway import polling

    result: PollResult = poller.poll(polling.StoreView(store))
    added = 0 if dry_run else len(polling.apply(store, result, caps))
    return Polled(list(result.events), added, result.summary)


def _legacy(poller: Any) -> bool:
    return "dry_run" in inspect.signature(poller.poll).parameters
