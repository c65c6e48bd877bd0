"""The debbugs poller: watched bugs' status snapshots -> ``debbugs.bug.*`` events.

One poll: find the watched bugs (``newest_bugs`` plus the numbers since the last
poll, ``get_bugs`` for the configured packages/sources/maintainers, and bugs
snapshotted recently), read their status with ``get_status`` (500 a call), diff
each against its snapshot, and return the events with the new snapshots and
cursors as a :class:`~gateway.polling.PollResult`, which the core commits in ONE
transaction. Any SOAP failure raises :class:`TransientError` before anything is
returned, so a failed or interrupted poll is simply repeated.

Bugs absent from the snapshot are reported ``new`` only when they were
submitted after the previous poll (minus :data:`NEW_SLACK`); older bugs that
enter the watch list (a package added to the config, a bug reassigned here) are
recorded silently. The very first poll records a silent baseline unless
``baseline = false`` or ``--backfill``.

Mail and SOAP report the same change once: BTS mail events are committed by
the mail path right away, each with a ``source_facts`` row (bug, verb) written
in the same transaction (:mod:`.facts`); each poll reads those facts and drops
its own event for the same change (``report`` = ``new``, ``close``, a
``forwarded`` or ``submitter`` change), consuming the fact. A fresh change with
no mail yet waits one poll (``mail_grace``) for the mail, so the usual order
(mail, then poll) holds even when a poll lands between the BTS acting and its
mail arriving; that wait is kept per bug in the ``debbugs.mail`` snapshots.

Before facts existed, the poller scanned the outbox for mail events after the
``debbugs.mail_seq`` cursor and kept per-bug markers in those snapshots. An old
state is honoured: its markers keep covering their changes until used or expired,
and the mail events after its cursor are read once, then the cursor is deleted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from adapters.debbugs import facts as mail_facts
from adapters.debbugs import status as st
from adapters.debbugs.client import DebbugsClient
from adapters.debbugs.settings import DebbugsSettings
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.event import Event
from gateway.polling import PollResult, StatePlan, StateView

log = logging.getLogger(__name__)

NAMESPACE = "debbugs"
#: Snapshots: per bug, a change held back for its mail (``deferred``), and the markers
#: of mail an old version saw (verb -> when).
MAIL_NAMESPACE = "debbugs.mail"
FACT_NAMESPACE = mail_facts.NAMESPACE
CURSOR_LAST_POLL = "debbugs.last_poll"
CURSOR_MAX_BUG = "debbugs.max_bug"
#: Retired: where an old version's outbox scan stopped (read once, then deleted).
CURSOR_MAIL_SEQ = "debbugs.mail_seq"
#: A bug missing from the snapshot counts as new if submitted this long before the last poll.
NEW_SLACK = 3600
#: Bug numbers above the last seen maximum watched per poll (besides ``newest_bugs``).
MAX_NEW_RANGE = 5000
#: How long a mail fact (or an old marker) waits for the poller to see its change.
MAIL_MARKER_TTL = 7 * 86400
#: ``seen`` (last time a bug was in the watch list) is rewritten at most this often.
SEEN_RESOLUTION = 86400
#: Mail event verb -> the poller change it already reported.
MAIL_COVERS = mail_facts.COVERS


class DebbugsPoller:
    name = "debbugs"

    def __init__(self, cfg: DebbugsSettings, *, backfill: bool = False,
                 clock: Callable[[], float] = time.time,
                 client: DebbugsClient | None = None):
        self.cfg = cfg
        self.backfill = backfill
        self.clock = clock
        self._client = client
        #: SOAP calls made by the last poll (for logs and the benchmark).
        self.last_calls = 0

    @property
    def client(self) -> DebbugsClient:
        if self._client is None:
            if not self.cfg.url:
                raise ConfigError("no SOAP endpoint configured", key="debbugs.url")
            kwargs: dict[str, Any] = {"timeout": self.cfg.timeout,
                                      "max_bytes": self.cfg.max_response_bytes,
                                      "retries": self.cfg.retries}
            if self.cfg.wsdl:
                kwargs["wsdl"] = self.cfg.wsdl
            self._client = DebbugsClient(self.cfg.url, **kwargs)
        return self._client

    def close(self) -> None:
        """Nothing held between polls (each SOAP call opens its own connection)."""

    # -- one poll ------------------------------------------------------------------------
    def poll(self, state: StateView) -> PollResult:
        now = self.clock()
        client = self.client
        calls_before = client.calls
        snapshots = {int(k): json.loads(v) for k, v in state.snapshots(NAMESPACE).items()}
        markers = {int(k): json.loads(v) for k, v in state.snapshots(MAIL_NAMESPACE).items()}
        last_poll = _float(state.cursor(CURSOR_LAST_POLL))
        max_bug = int(_float(state.cursor(CURSOR_MAX_BUG)) or 0)
        legacy_seq = state.cursor(CURSOR_MAIL_SEQ)

        try:
            scope, newest_top = self._scope(client, max_bug)
            keep_after = now - self.cfg.keep_days * 86400
            kept = {bug for bug, snap in snapshots.items()
                    if not snap.get("archived") and snap.get("seen", 0) >= keep_after}
            statuses = client.get_status(scope | kept, self.cfg.batch)
        finally:
            self.last_calls = client.calls - calls_before

        plan = _Plan(state.facts(FACT_NAMESPACE))
        if legacy_seq is not None:  # an old state: its unread mail events, once
            for bug, verbs in _mail_events(state, int(_float(legacy_seq) or 0)).items():
                marker = markers.setdefault(bug, {})
                for verb in verbs:
                    marker[verb] = now
                plan.touched_markers.add(bug)
            plan.state.cursors[CURSOR_MAIL_SEQ] = None

        first = last_poll is None
        for bug in sorted(statuses):
            snap = st.snapshot(bug, statuses[bug])
            old = snapshots.get(bug)
            if bug not in scope:
                seen = (old or {}).get("seen", now)
            elif old is None or now - old.get("seen", 0) >= SEEN_RESOLUTION:
                seen = now
            else:
                seen = old["seen"]
            snap["seen"] = seen
            self._judge(plan, bug, old, snap, markers.setdefault(bug, {}), now=now,
                        first=first, last_poll=last_poll)
        for bug, snap in snapshots.items():
            if bug not in statuses and bug not in scope and snap.get("seen", 0) < keep_after:
                plan.state.snapshots[(NAMESPACE, str(bug))] = None
        plan.expire(markers, now - MAIL_MARKER_TTL)

        for bug in plan.touched_markers:
            marker = markers.get(bug) or {}
            plan.state.snapshots[(MAIL_NAMESPACE, str(bug))] = \
                json.dumps(marker, sort_keys=True) if marker else None
        plan.state.cursors[CURSOR_LAST_POLL] = repr(now)
        existing = [b for b in statuses if b <= (newest_top or 0)]
        plan.state.cursors[CURSOR_MAX_BUG] = str(max([max_bug, *existing]))
        plan.state.counters.update({"debbugs.polls": 1, "debbugs.soap_calls": self.last_calls})
        return PollResult(
            plan.events, plan.state,
            summary=f"{len(statuses)} bugs read in {self.last_calls} SOAP calls, "
                    f"{len(plan.events)} events, {plan.puts} snapshots written")

    def _scope(self, client: DebbugsClient, max_bug: int) -> tuple[set[int], int | None]:
        """Bug numbers on the watch list now, and the highest newest_bugs number."""
        scope: set[int] = set()
        top = None
        if self.cfg.watch_new:
            newest = client.newest_bugs(self.cfg.newest_count)
            scope.update(newest)
            if newest:
                top = max(newest)
                if max_bug:
                    scope.update(range(max(max_bug + 1, top - MAX_NEW_RANGE), top + 1))
        for key, values in (("package", self.cfg.packages), ("src", self.cfg.sources),
                            ("maint", self.cfg.maintainers)):
            if values:
                scope.update(client.get_bugs([(key, v) for v in values]))
        return scope, top

    def _judge(self, plan: _Plan, bug: int, old: dict[str, Any] | None, snap: dict[str, Any],
               marker: dict[str, Any], *, now: float, first: bool,
               last_poll: float | None) -> None:
        """Decide this bug's events and snapshot write."""
        link = self.cfg.link
        if old is None:
            if self.backfill:
                report = True
            elif first:
                report = not self.cfg.baseline
            else:
                report = bool(snap["date"]) and last_poll is not None \
                    and snap["date"] >= last_poll - NEW_SLACK
            if report and "new" in plan.covered(bug, marker):
                report = False
                plan.consume(bug, marker, "new")
            elif report and not self.backfill and self._defer(plan, bug, marker, snap["date"],
                                                              now):
                return
            if report:
                plan.events.append(st.new_event(snap, link))
                plan.done_waiting(bug, marker)
            plan.put(bug, snap)
            return
        events = st.diff_events(old, snap, link)
        covered = plan.covered(bug, marker)
        kept: list[Event] = []
        for event in events:
            changes = dict(event.body.get("changes", {}))
            if event.event == "close" and "close" in covered:
                plan.consume(bug, marker, "close")
                continue
            trimmed = {f: v for f, v in changes.items() if f not in covered}
            for field_name in set(changes) - set(trimmed):
                plan.consume(bug, marker, field_name)
            if event.event == "update" and not trimmed:
                continue
            if trimmed != changes:
                event = dataclasses.replace(event, body={**event.body, "changes": trimmed})
            kept.append(event)
        if any(_mail_reported(e) for e in kept) and \
                self._defer(plan, bug, marker, snap.get("last_modified"), now):
            return
        plan.events.extend(kept)
        if kept:
            plan.done_waiting(bug, marker)
        if json.dumps(old, sort_keys=True) != json.dumps(snap, sort_keys=True):
            plan.put(bug, snap)

    def _defer(self, plan: _Plan, bug: int, marker: dict[str, Any], stamp: int | None,
               now: float) -> bool:
        """Hold a fresh change back one poll for the BTS mail about it (at most once)."""
        if self.cfg.mail_grace <= 0 or not stamp or now - stamp >= self.cfg.mail_grace:
            return False
        if marker.get("deferred"):
            return False
        marker["deferred"] = now
        plan.touched_markers.add(bug)
        return True


class _Plan:
    """What one poll will commit, and the mail facts it may consume."""

    def __init__(self, facts: dict[str, dict[str, float]]) -> None:
        self.events: list[Event] = []
        self.state = StatePlan()
        self.puts = 0
        self.touched_markers: set[int] = set()
        #: bug -> {mail verb: when recorded}: ``source_facts`` not consumed yet
        self.facts = facts

    def put(self, bug: int, snap: dict[str, Any]) -> None:
        self.state.snapshots[(NAMESPACE, str(bug))] = json.dumps(snap, sort_keys=True)
        self.puts += 1

    def covered(self, bug: int, marker: dict[str, Any]) -> set[str]:
        """Changes BTS mail already reported for ``bug`` (facts, and an old marker)."""
        verbs = set(self.facts.get(str(bug), ())) | set(marker)
        return {MAIL_COVERS[v] for v in verbs if v in MAIL_COVERS}

    def done_waiting(self, bug: int, marker: dict[str, Any]) -> None:
        if marker.pop("deferred", None) is not None:
            self.touched_markers.add(bug)

    def consume(self, bug: int, marker: dict[str, Any], change: str) -> None:
        facts = self.facts.get(str(bug), {})
        for verb, covers in MAIL_COVERS.items():
            if covers != change:
                continue
            if facts.pop(verb, None) is not None:
                self.state.consumed_facts.append((FACT_NAMESPACE, str(bug), verb))
            if marker.pop(verb, None) is not None:
                self.touched_markers.add(bug)
        if marker.pop("deferred", None) is not None:
            self.touched_markers.add(bug)

    def expire(self, markers: dict[int, dict[str, Any]], before: float) -> None:
        """Drop facts and old markers whose change the poller never saw within the TTL."""
        for subject, facts in self.facts.items():
            for verb, at in facts.items():
                if at < before:
                    self.state.consumed_facts.append((FACT_NAMESPACE, subject, verb))
        for bug, marker in markers.items():
            for verb, at in list(marker.items()):
                if verb != "deferred" and at < before:
                    del marker[verb]
                    self.touched_markers.add(bug)


def _mail_reported(event: Event) -> bool:
    """Would the BTS also send mail for this change (so it is worth waiting for)?"""
    if event.event == "close":
        return True
    changes = event.body.get("changes", {})
    return "forwarded" in changes or "submitter" in changes


def _mail_events(state: StateView, after: int, page: int = 1000) -> dict[int, set[str]]:
    """Debbugs mail events in the outbox after seq ``after`` (an old state's unread ones):
    bug -> verbs."""
    found: dict[int, set[str]] = {}
    top = after
    while True:
        rows = state.outbox_after(top, page)
        for seq_id, topic, envelope in rows:
            top = seq_id
            prefix, _, verb = topic.rpartition(".")
            if not prefix.endswith(".debbugs.bug") or verb not in MAIL_COVERS:
                continue
            try:
                body = json.loads(envelope).get("msg") or {}
                bug = int(body["bug"])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if body.get("via") == "mail":
                found.setdefault(bug, set()).add(verb)
        if len(rows) < page:
            return found


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def from_settings(settings: Settings, options: Any = None, *,
                  backfill: bool = False) -> DebbugsPoller:
    """The poller factory, ``factory(settings, options)``: ``options`` is the ``busgate
    poll debbugs`` namespace (its ``--backfill``), or None inside ``busgate run``."""
    return DebbugsPoller(settings.debbugs,
                         backfill=backfill or bool(getattr(options, "backfill", False)))
