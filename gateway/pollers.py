"""The poller contract and the registry the daemon and ``busgate poll`` share.

A poller reads one legacy source (a SOAP API, a database) and returns the
events it found with its state plan (:mod:`gateway.polling`); the core commits
both in one store transaction, so a crash between reading and publishing
repeats the read and never skips it.
"""

from __future__ import annotations

import importlib

from gateway.config import Settings
from gateway.polling import Poller

#: Poller name -> (settings section, "module:factory"); factory(settings, options) -> Poller.
POLLERS = {
    "debbugs": ("debbugs", "adapters.debbugs.poller:from_settings"),
    "wanna-build": ("wannabuild", "adapters.wannabuild.poller:from_settings"),
}


def enabled(settings: Settings) -> list[str]:
    return [name for name, (section, _) in POLLERS.items()
            if getattr(settings, section).enabled]


def make(name: str, settings: Settings) -> Poller:
    _, target = POLLERS[name]
    module, _, factory = target.partition(":")
    return getattr(importlib.import_module(module), factory)(settings, None)


def interval(name: str, settings: Settings) -> float:
    section, _ = POLLERS[name]
    return float(getattr(settings, section).interval)


def schedule(name: str, settings: Settings) -> str:
    """The poller's crontab line, or "" for every :func:`interval` seconds."""
    section, _ = POLLERS[name]
    return str(getattr(settings, section).schedule)
