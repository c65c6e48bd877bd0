"""The poller contract: adapters translate, the core commits.

A poller reads its source and returns a :class:`PollResult`: the events it found
and a :class:`StatePlan` (the new cursors, snapshots, consumed source facts and
poison inputs to quarantine). It reads busgate's state only through a read-only
:class:`StateView`, and never opens a transaction: the core applies events and
plan in ONE store transaction (:func:`apply`), so a crash between reading and
committing repeats the read and never skips it. ``--dry-run`` is simply not
applying.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gateway.event import Event

if TYPE_CHECKING:  # pollers import this module: it must not load the store
    from gateway.config import QuarantineSettings
    from gateway.store import Store

log = logging.getLogger(__name__)


@dataclass
class QuarantineItem:
    """A source input that cannot become an event (a poison row): kept once, with why."""

    kind: str
    raw: bytes
    error: str
    origin: str = ""
    reason: str = "poison"


@dataclass
class StatePlan:
    """What a poll changes in busgate's state besides the outbox."""

    #: cursor name -> new value; None deletes the cursor (a retired one)
    cursors: dict[str, str | None] = field(default_factory=dict)
    #: (namespace, key) -> new value; None deletes the snapshot
    snapshots: dict[tuple[str, str], str | None] = field(default_factory=dict)
    #: (namespace, subject, fact) rows of ``source_facts`` this poll consumed (deleted)
    consumed_facts: list[tuple[str, str, str]] = field(default_factory=list)
    quarantine: list[QuarantineItem] = field(default_factory=list)
    #: counter name -> increment
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class PollResult:
    events: list[Event]
    plan: StatePlan = field(default_factory=StatePlan)
    #: One line for ``busgate poll`` and the log (e.g. "1,000 rows read").
    summary: str = ""


class StateView(Protocol):
    """Read-only access to busgate's state, all a poller may see."""

    def cursor(self, name: str) -> str | None: ...

    def snapshot(self, namespace: str, key: str) -> str | None: ...

    def snapshots(self, namespace: str) -> dict[str, str]: ...

    def has_key(self, key: str) -> bool:
        """Whether an event with this source key is already in the outbox."""
        ...

    def facts(self, namespace: str) -> dict[str, dict[str, float]]:
        """``source_facts`` of a namespace: subject -> {fact: time recorded}."""
        ...

    def outbox_after(self, seq_id: int, limit: int) -> list[tuple[int, str, str]]:
        """``(seq_id, topic, envelope)`` of outbox rows after ``seq_id``. Only for a
        poller's one-off upgrade from a state it kept before ``source_facts`` existed;
        polling by scanning the outbox is what facts replace."""
        ...


class Poller(Protocol):
    #: Name used in logs, counters and cursors (e.g. ``debbugs``).
    name: str

    def poll(self, state: StateView) -> PollResult:
        """Run one poll. Raise :class:`gateway.errors.TransientError` for failures
        worth a retry (source down, timeout, bad answer)."""
        ...

    def close(self) -> None: ...


class StoreView:
    """The :class:`StateView` of a :class:`gateway.store.Store` (reads only)."""

    def __init__(self, store: Store):
        self._store = store

    def cursor(self, name: str) -> str | None:
        return self._store.cursor(name)

    def snapshot(self, namespace: str, key: str) -> str | None:
        return self._store.snapshot(namespace, key)

    def snapshots(self, namespace: str) -> dict[str, str]:
        return self._store.snapshots(namespace)

    def has_key(self, key: str) -> bool:
        return self._store.has_key(key)

    def facts(self, namespace: str) -> dict[str, dict[str, float]]:
        return self._store.facts(namespace)

    def outbox_after(self, seq_id: int, limit: int) -> list[tuple[int, str, str]]:
        return [(r.seq_id, r.topic, r.envelope) for r in self._store.rows_after(seq_id, limit)]


def apply(store: Store, result: PollResult,
          caps: QuarantineSettings | None = None) -> list[int]:
    """Commit a poll: its events, cursors, snapshots, consumed facts, quarantined inputs
    and counters, in ONE store transaction (all of it, or nothing on any failure), and
    return the ``seq_id`` given to each new event (events already in the outbox get none).

    Each event is checked against its message type first (the store's index): one its
    type refuses goes to quarantine as ``invalid`` (:func:`gateway.ingest.screen_poll`)
    and the rest commit. Quarantine keeps to ``caps`` (``[quarantine]``; its defaults when
    None) as the spool worker does: past ``max_items`` an item is only logged and counted,
    past ``max_bytes`` it keeps its reason and no bytes.
    """
    if caps is None:
        from gateway.config import QuarantineSettings

        caps = QuarantineSettings()
    index = getattr(store.factory, "index", None)
    if index is not None:  # an event its type refuses is quarantined, not published
        from gateway.ingest import screen_poll

        result = screen_poll(result, index)
    plan = result.plan
    dropped: list[QuarantineItem] = []
    with store.transaction() as tx:
        given = tx.add_events(result.events) if result.events else []
        for item in plan.quarantine:
            outcome = tx.quarantine_within(
                item.kind, item.raw, error=item.error, reason=item.reason, origin=item.origin,
                max_items=caps.max_items, max_bytes=caps.max_bytes)
            if outcome == "dropped":
                dropped.append(item)
        for (namespace, key), value in plan.snapshots.items():
            if value is None:
                tx.delete_snapshot(namespace, key)
            else:
                tx.put_snapshot(namespace, key, value)
        if plan.consumed_facts:
            tx.consume_facts(plan.consumed_facts)
        for name, cursor in plan.cursors.items():
            if cursor is None:
                tx.delete_cursor(name)
            else:
                tx.set_cursor(name, cursor)
        for counter, step in plan.counters.items():
            if step:
                tx.bump(counter, step)
    for item in dropped:  # after the commit: a rolled-back poll dropped nothing
        log.error("quarantine full (quarantine.max_items = %d): %s input %s (%d bytes, %s: %s) "
                  "not kept", caps.max_items, item.kind, item.origin or "(unnamed)",
                  len(item.raw), item.reason, item.error)
    return given
