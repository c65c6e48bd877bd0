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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gateway.event import Event

if TYPE_CHECKING:
    from gateway.store import Store


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

    #: cursor name -> new value
    cursors: dict[str, str] = field(default_factory=dict)
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


class Poller(Protocol):
    #: Name used in logs, counters and cursors (e.g. ``debbugs``).
    name: str

    def poll(self, state: StateView) -> PollResult:
        """Run one poll. Raise :class:`gateway.errors.TransientError` for failures
        worth a retry (source down, timeout, bad answer)."""
        ...

    def close(self) -> None: ...


class StoreView:
    """A :class:`StateView` over the state store (reads only).

    Minimal version for the registry branch; the poll-commit work (issue 11) owns the
    real one."""

    def __init__(self, store: Store):
        self._store = store

    def cursor(self, name: str) -> str | None:
        return self._store.cursor(name)

    def snapshot(self, namespace: str, key: str) -> str | None:
        return self._store.snapshot(namespace, key)

    def snapshots(self, namespace: str) -> dict[str, str]:
        return self._store.snapshots(namespace)

    def has_key(self, key: str) -> bool:
        with self._store.transaction() as tx:
            return tx.has_key(key)

    def facts(self, namespace: str) -> dict[str, dict[str, float]]:
        return {}  # no source_facts table yet


def apply(store: Store, result: PollResult, caps: object | None = None) -> list[int]:
    """Commit a poll's events and its plan in ONE transaction; the new events' seq_ids.

    Minimal version for the registry branch (``caps``, the ``[quarantine]`` settings, not
    enforced; no source facts); the poll-commit work (issue 11) owns the real one under
    this name and signature."""
    plan = result.plan
    with store.transaction() as tx:
        added = tx.add_events(result.events)
        for name, value in plan.cursors.items():
            tx.set_cursor(name, value)
        for (namespace, key), value in plan.snapshots.items():
            if value is None:
                tx.delete_snapshot(namespace, key)
            else:
                tx.put_snapshot(namespace, key, value)
        for item in plan.quarantine:
            tx.quarantine(item.kind, item.raw, error=item.error, reason=item.reason,
                          origin=item.origin)
        for counter, increment in plan.counters.items():
            tx.bump(counter, increment)
    return added
