"""The debbugs poller: watched bugs' status snapshots -> ``debbugs.bug.*`` events.

One poll: find the watched bugs (``newest_bugs`` plus the numbers since the last
poll, ``get_bugs`` for the configured packages/sources/maintainers, and bugs
snapshotted recently), read their status with ``get_status`` (500 a call), diff
each against its snapshot, and commit events, snapshots and cursors in ONE
transaction. Any SOAP failure raises :class:`TransientError` before anything is
written, so a failed or interrupted poll is simply repeated.

Bugs absent from the snapshot are reported ``new`` only when they were
submitted after the previous poll (minus :data:`NEW_SLACK`); older bugs that
enter the watch list (a package added to the config, a bug reassigned here) are
recorded silently. The very first poll records a silent baseline unless
``baseline = false`` or ``--backfill``.

Mail and SOAP report the same change once: BTS mail events are committed by
the mail path right away; each poll reads the debbugs mail events added to the
outbox since its last poll (``via: mail``), keeps them as per-bug markers, and
drops its own event for the same change (``report`` = ``new``, ``close``, a
``forwarded`` or ``submitter`` change). A fresh change with no mail yet waits
one poll (``mail_grace``) for the mail, so the usual order (mail, then poll)
holds even when a poll lands between the BTS acting and its mail arriving.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from adapters.debbugs import status as st
from adapters.debbugs.client import DebbugsClient
from adapters.debbugs.settings import DebbugsSettings
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.event import Event
from gateway.store import Store

log = logging.getLogger(__name__)

NAMESPACE = "debbugs"
MAIL_NAMESPACE = "debbugs.mail"
CURSOR_LAST_POLL = "debbugs.last_poll"
CURSOR_MAX_BUG = "debbugs.max_bug"
CURSOR_MAIL_SEQ = "debbugs.mail_seq"
#: A bug missing from the snapshot counts as new if submitted this long before the last poll.
NEW_SLACK = 3600
#: Bug numbers above the last seen maximum watched per poll (besides ``newest_bugs``).
MAX_NEW_RANGE = 5000
#: How long a mail marker waits for the poller to see its change.
MAIL_MARKER_TTL = 7 * 86400
#: ``seen`` (last time a bug was in the watch list) is rewritten at most this often.
SEEN_RESOLUTION = 86400
#: Mail event verb -> the poller change it already reported.
MAIL_COVERS = {"report": "new", "close": "close", "forward": "forwarded",
               "submitter-change": "submitter"}


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

    # -- one poll ------------------------------------------------------------------------
    def poll(self, store: Store, *, dry_run: bool = False) -> list[Event]:
        now = self.clock()
        client = self.client
        calls_before = client.calls
        snapshots = {int(k): json.loads(v) for k, v in store.snapshots(NAMESPACE).items()}
        markers = {int(k): json.loads(v) for k, v in store.snapshots(MAIL_NAMESPACE).items()}
        last_poll = _float(store.cursor(CURSOR_LAST_POLL))
        max_bug = int(_float(store.cursor(CURSOR_MAX_BUG)) or 0)
        mail_seq = int(_float(store.cursor(CURSOR_MAIL_SEQ)) or 0)

        try:
            scope, newest_top = self._scope(client, max_bug)
            keep_after = now - self.cfg.keep_days * 86400
            kept = {bug for bug, snap in snapshots.items()
                    if not snap.get("archived") and snap.get("seen", 0) >= keep_after}
            statuses = client.get_status(scope | kept, self.cfg.batch)
        finally:
            self.last_calls = client.calls - calls_before

        mail_top, fresh = _mail_events(store, mail_seq)
        for bug, verbs in fresh.items():
            marker = markers.setdefault(bug, {})
            for verb in verbs:
                marker[verb] = now

        plan = _Plan()
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
                plan.deletes.append(bug)
        for bug, marker in markers.items():
            for verb, at in list(marker.items()):
                if now - at > MAIL_MARKER_TTL:
                    del marker[verb]
                    plan.touched_markers.add(bug)

        events = plan.events
        if dry_run:
            return events
        with store.transaction() as tx:
            tx.add_events(events)
            for bug, snap in plan.puts.items():
                tx.put_snapshot(NAMESPACE, str(bug), json.dumps(snap, sort_keys=True))
            for bug in plan.deletes:
                tx.delete_snapshot(NAMESPACE, str(bug))
            for bug in set(fresh) | plan.touched_markers:
                marker = markers.get(bug) or {}
                if marker:
                    tx.put_snapshot(MAIL_NAMESPACE, str(bug), json.dumps(marker, sort_keys=True))
                else:
                    tx.delete_snapshot(MAIL_NAMESPACE, str(bug))
            tx.set_cursor(CURSOR_LAST_POLL, repr(now))
            existing = [b for b in statuses if b <= (newest_top or 0)]
            tx.set_cursor(CURSOR_MAX_BUG, max([max_bug, *existing]))
            tx.set_cursor(CURSOR_MAIL_SEQ, mail_top)
            tx.bump("debbugs.polls")
            tx.bump("debbugs.soap_calls", self.last_calls)
        log.info("debbugs poll: %d bugs read in %d SOAP calls, %d events, %d snapshots written",
                 len(statuses), self.last_calls, len(events), len(plan.puts))
        return events

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
            if report and "new" in _covered(marker):
                report = False
                plan.consume(bug, marker, "new")
            elif report and not self.backfill and self._defer(plan, bug, marker, snap["date"],
                                                              now):
                return
            if report:
                plan.events.append(st.new_event(snap, link))
                plan.done_waiting(bug, marker)
            plan.puts[bug] = snap
            return
        events = st.diff_events(old, snap, link)
        covered = _covered(marker)
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
            plan.puts[bug] = snap

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
    """What one poll will commit."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.puts: dict[int, dict[str, Any]] = {}
        self.deletes: list[int] = []
        self.touched_markers: set[int] = set()

    def done_waiting(self, bug: int, marker: dict[str, Any]) -> None:
        if marker.pop("deferred", None) is not None:
            self.touched_markers.add(bug)

    def consume(self, bug: int, marker: dict[str, Any], change: str) -> None:
        for verb, covers in MAIL_COVERS.items():
            if covers == change:
                marker.pop(verb, None)
        marker.pop("deferred", None)
        self.touched_markers.add(bug)


def _covered(marker: dict[str, Any]) -> set[str]:
    return {MAIL_COVERS[v] for v in marker if v in MAIL_COVERS}


def _mail_reported(event: Event) -> bool:
    """Would the BTS also send mail for this change (so it is worth waiting for)?"""
    if event.event == "close":
        return True
    changes = event.body.get("changes", {})
    return "forwarded" in changes or "submitter" in changes


def _mail_events(store: Store, after: int, page: int = 1000) -> tuple[int, dict[int, set[str]]]:
    """Debbugs mail events in the outbox after seq ``after``: (last seq read, bug -> verbs)."""
    found: dict[int, set[str]] = {}
    top = after
    while True:
        rows = store.rows_after(top, page)
        for row in rows:
            top = row.seq_id
            prefix, _, verb = row.topic.rpartition(".")
            if not prefix.endswith(".debbugs.bug") or verb not in MAIL_COVERS:
                continue
            try:
                body = json.loads(row.envelope).get("msg") or {}
                bug = int(body["bug"])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if body.get("via") == "mail":
                found.setdefault(bug, set()).add(verb)
        if len(rows) < page:
            return top, found


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def from_settings(settings: Settings, *, backfill: bool = False) -> DebbugsPoller:
    """The registry's factory (``gateway.pollers``)."""
    return DebbugsPoller(settings.debbugs, backfill=backfill)
