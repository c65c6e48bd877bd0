"""Turn one spool item (or quarantined input) into outbox rows, or into quarantine.

Three outcomes, never two: events committed; nothing recognized (kept in
quarantine as ``unrecognized``, counted); or the parser failed (kept in
quarantine as ``error`` with the message, for ``busgate reprocess``).
"""

from __future__ import annotations

import importlib
import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import Settings
from gateway.errors import ParseError
from gateway.event import Event
from gateway.store import Store

log = logging.getLogger(__name__)

#: A parser gets the raw bytes and the settings (trust policy, links, bounds) it may need.
Parser = Callable[[bytes, "Settings | None"], list[Event]]

#: Spool item kind -> "module:function" parsing raw bytes into events.
PARSERS = {
    "events": "gateway.ingest:parse_events",
    "mail": "adapters.mail:parse_mail",
}

#: Largest events item a short-lived command may hand over, so a hostile file cannot exhaust memory.
MAX_EVENTS_ITEM = 512 * 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    added: int = 0
    duplicates: int = 0
    quarantined: str | None = None  # reason, when the item went to quarantine
    error: str | None = None


def parser_for(kind: str) -> Parser:
    target = PARSERS.get(kind)
    if target is None:
        raise ParseError(f"no parser for spool item kind {kind!r}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def parse_events(raw: bytes, settings: Settings | None = None) -> list[Event]:
    """An ``events`` item: one JSON event record (``Event.to_dict``) per line."""
    events = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ParseError(f"line {number}: not a JSON event record: {exc}") from None
        try:
            events.append(Event.from_dict(record))
        except ParseError as exc:
            raise ParseError(f"line {number}: {exc}") from None
    return events


def ingest(store: Store, settings: Settings, kind: str, raw: bytes, origin: str = "",
           batch: int = 10000) -> Outcome:
    """Parse ``raw`` and commit its events (or quarantine it). Safe to run twice."""
    limit = settings.mail.max_size if kind == "mail" else MAX_EVENTS_ITEM
    if len(raw) > limit:
        message = f"{kind} item is {len(raw)} bytes, over the {limit}-byte limit"
        return _quarantine(store, kind, raw, origin, "oversize", message)
    try:
        events = parser_for(kind)(raw, settings)
    except Exception as exc:  # any parser crash: keep the input, never lose it
        detail = "".join(traceback.format_exception_only(exc)).strip()
        log.warning("cannot parse %s item %s: %s", kind, origin or "(unnamed)", detail)
        return _quarantine(store, kind, raw, origin, "error", detail)
    if not events:
        if kind == "events":
            return Outcome()
        return _quarantine(store, kind, raw, origin, "unrecognized",
                           "no known event in this input")
    added = 0
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        with store.transaction() as tx:
            added += len(tx.add_events(chunk))
            tx.bump(f"ingested.{kind}", 1 if start == 0 else 0)
    duplicates = len(events) - added
    if duplicates:
        log.info("%s item %s: %d duplicate event(s) ignored", kind, origin, duplicates)
    return Outcome(added=added, duplicates=duplicates)


def reprocess(store: Store, item: dict[str, object], *, force_size: bool = False,
              settings: Settings | None = None) -> Outcome:
    """Run a quarantined input through its parser again (after a fix).

    On success its events are committed and the item released in one
    transaction; otherwise the item stays, with the new error.
    """
    kind, raw, ident = str(item["kind"]), bytes(item["raw"]), int(item["id"])  # type: ignore[call-overload]
    if item["reason"] == "oversize" and not force_size:
        return Outcome(quarantined="oversize", error=str(item["error"]))
    try:
        events = parser_for(kind)(raw, settings)
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        with store.transaction() as tx:
            tx.update_quarantine(ident, error=detail, reason="error")
        return Outcome(quarantined="error", error=detail)
    if not events:
        with store.transaction() as tx:
            tx.update_quarantine(ident, error="no known event in this input",
                                 reason="unrecognized")
        return Outcome(quarantined="unrecognized", error="no known event in this input")
    with store.transaction() as tx:
        added = len(tx.add_events(events))
        tx.release(ident)
        tx.bump("reprocessed")
    return Outcome(added=added, duplicates=len(events) - added)


def _quarantine(store: Store, kind: str, raw: bytes, origin: str, reason: str,
                error: str) -> Outcome:
    with store.transaction() as tx:
        tx.quarantine(kind, raw, error=error, reason=reason, origin=origin)
    return Outcome(quarantined=reason, error=error)
