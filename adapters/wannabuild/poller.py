"""The wanna-build poller: new ``transactions`` rows -> ``wanna-build.build.<state>`` events.

``transactions`` has no serial id, and wanna-build stamps each row with ``now()``,
the *start* of the writing transaction, so a long transaction (a merge-v3 run)
makes rows visible after rows with later timestamps. No wall-clock window can
bound that, so the poller follows the database's own MVCC snapshots:

* every poll lists the transactions open in the database (``pg_locks``, readable by
  any role) just before it takes its snapshot, and remembers for each a time its
  rows cannot be older than (it was not open at the poll before: it started after
  that poll's listing);
* ``low``, the oldest of those bounds, is where a row not yet visible can still be
  stamped; the next poll reads ``(low, time]`` (``time``: the newest row read) for
  rows written by xids the last snapshot could not see (``xmin`` at or past that
  snapshot's xmin), besides everything after ``time``. A transaction open for an
  hour keeps ``low`` an hour back for exactly as long; its rows are published the
  poll after it commits, however long it ran.

Rows already in the outbox are recognised by their event key and dropped, so a
row is published exactly once. Rows of one run share a timestamp; they are put in
the order their state chain (prevstate -> state) gives (:mod:`.order`), so a
package's last event is its final state. A row that cannot become an event (time
NULL, ``infinity``, beyond year 9999, or anything else that fails to translate) is
quarantined once with the reason and counted (``wanna-build.poison_rows``), and
never blocks the rows after it.

The poll returns its events, poison rows and new cursor as a
:class:`~gateway.polling.PollResult`; the core commits them in ONE store
transaction: a crash between reading and committing repeats the read, a database
failure raises :class:`~gateway.errors.TransientError` before anything is
returned. ``--dry-run`` just does not commit.

A first run (no cursor) publishes nothing: it records the newest row as the start,
and the keys of the rows already visible that a later snapshot read could return
(so a row still being written at that moment is published, one already there is
not). Transactions open at that moment have an unknown start; they are assumed to
have started within ``overlap_seconds``. ``wannabuild.since`` (first run) or
``busgate poll wanna-build --since`` (any run) start at a given time instead; rows
already in the outbox are skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from adapters.wannabuild.order import in_written_order
from adapters.wannabuild.query import Reader, Snapshot, describe
from adapters.wannabuild.settings import WannaBuildSettings
from adapters.wannabuild.translate import Row, describe_row, event_key, poison_key, to_event
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.event import Event
from gateway.polling import PollResult, QuarantineItem, StatePlan, StateView

log = logging.getLogger(__name__)

CURSOR = "wanna-build"
NAMESPACE = "wanna-build"
BASELINE = "baseline"
#: Store snapshots: one per quarantined poison row (so it is quarantined once).
POISON_NAMESPACE = "wanna-build-poison"
QUARANTINE_KIND = "wanna-build-row"
ONE_TICK = dt.timedelta(microseconds=1)
#: Most poison rows looked at per poll.
MAX_POISON_ROWS = 1000
#: A transaction's ``now()`` is when its first statement arrived, a moment before it
#: shows in ``pg_locks``: bounds taken from a listing are moved back by this much.
START_MARGIN = dt.timedelta(seconds=2)


@dataclass(frozen=True)
class Cursor:
    #: Newest ``transactions.time`` read (every row visible at or before it was read).
    time: dt.datetime
    #: Rows not visible yet are stamped after this (oldest bound of the open transactions).
    low: dt.datetime
    #: Database clock when the open transactions were last listed.
    checked: dt.datetime
    #: xmin (64-bit) of the last snapshot; None: not known (rows are then told by key only).
    xmin: int | None = None
    #: ``pid/vxid`` of each transaction open at the last poll -> bound of its rows' time.
    open: dict[str, str] = field(default_factory=dict)

    def dump(self) -> str:
        return json.dumps({"time": self.time.isoformat(), "low": self.low.isoformat(),
                           "checked": self.checked.isoformat(), "xmin": self.xmin,
                           "open": self.open})

    @classmethod
    def load(cls, value: str | None, overlap: dt.timedelta = dt.timedelta(0)) -> Cursor | None:
        if value is None:
            return None
        data = json.loads(value)
        time = dt.datetime.fromisoformat(data["time"])
        if "low" not in data:  # written by a version with a wall-clock overlap window
            low = min(time, dt.datetime.fromisoformat(data["now"]) - overlap)
            return cls(time=time, low=low, checked=low)
        return cls(time=time, low=dt.datetime.fromisoformat(data["low"]),
                   checked=dt.datetime.fromisoformat(data["checked"]), xmin=data["xmin"],
                   open=dict(data["open"]))


def parse_since(value: str, key: str = "wannabuild.since") -> dt.datetime:
    """An ISO 8601 date or time; without a UTC offset it is the database's local time."""
    try:
        return dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"not an ISO 8601 timestamp: {value!r} (e.g. 2024-05-01T12:00:00Z)",
                          key=key) from None


class WannaBuildPoller:
    name = "wanna-build"

    def __init__(self, cfg: WannaBuildSettings, *, since: dt.datetime | None = None,
                 reader: Reader | None = None):
        self.cfg = cfg
        self.overlap = dt.timedelta(seconds=cfg.overlap_seconds)
        self.first_since = parse_since(cfg.since) if cfg.since else None
        #: ``--since``: where the next poll starts, whatever the cursor says (used once:
        #: until the state holds the cursor planned by the poll that used it).
        self.rewind = since
        self._rewound_to: str | None = None
        self.reader = reader or Reader(
            cfg.dsn, statement_timeout_ms=cfg.statement_timeout_ms,
            connect_timeout=cfg.connect_timeout, timezone=cfg.timezone,
            max_failure_chars=cfg.max_failure_chars)
        #: Figures of the last poll: rows fetched, late rows published, poison rows.
        self.last_rows_read = 0
        self.last_late = 0
        self.last_poison = 0

    def close(self) -> None:
        self.reader.close()

    # -- one poll ------------------------------------------------------------------------
    def poll(self, state: StateView) -> PollResult:
        stored = state.cursor(CURSOR)
        if self._rewound_to is not None and stored == self._rewound_to:
            self.rewind = None  # the poll that started at ``--since`` was committed
        self._rewound_to = None
        cursor = Cursor.load(stored, self.overlap)
        baseline = _load_baseline(state.snapshot(NAMESPACE, BASELINE))
        with self.reader.snapshot() as snap:
            start = self.rewind if self.rewind is not None else \
                self.first_since if cursor is None else None
            if start is not None:
                low = snap_local(snap, start) - ONE_TICK
                # transactions open now: start unknown, assumed within overlap_seconds
                cursor = Cursor(time=low, low=low, checked=max(low, snap.now - self.overlap))
                baseline = None
            if cursor is None:
                return self._baseline(snap)
            late_rows = (snap.late(cursor.low, cursor.time, cursor.xmin)
                         if cursor.low < cursor.time else [])
            poison = snap.poison(cursor.xmin, MAX_POISON_ROWS)
            rows, more = snap.after(cursor.time, self.cfg.batch_rows)
            self.last_rows_read = snap.rows_read
        new_cursor = self._next_cursor(cursor, snap, rows)
        skip = set(baseline["keys"]) if baseline else set()
        keep_baseline = bool(baseline) and new_cursor.low < _time(baseline["until"])
        late, bad_late = self._translate(in_written_order(late_rows))
        events, bad = self._translate(in_written_order(rows))
        bad = [*self._translate(poison)[1], *bad_late, *bad]
        late_keys = {e.key for e in late}
        fresh: dict[str, Event] = {}
        for event in (*late, *events):
            if event.key not in skip and event.key not in fresh \
                    and not state.has_key(event.key):
                fresh[event.key] = event
        published = list(fresh.values())
        self.last_late = sum(1 for key in fresh if key in late_keys)
        plan = StatePlan(cursors={CURSOR: new_cursor.dump()})
        if self.rewind is not None:
            self._rewound_to = plan.cursors[CURSOR]
        self.last_poison = self._quarantine(state, plan, bad)
        if baseline and not keep_baseline:
            plan.snapshots[(NAMESPACE, BASELINE)] = None
        plan.counters.update({"wanna-build.polls": 1,
                              "wanna-build.rows_read": self.last_rows_read,
                              "wanna-build.late_rows": self.last_late})
        if self.last_late:
            log.info("wanna-build: %d row(s) of transaction(s) that committed after the "
                     "previous poll's snapshot, stamped before its newest row, found now",
                     self.last_late)
        return PollResult(published, plan, summary=f"{self.last_rows_read} rows read"
                          + (", more rows pending" if more else ""))

    def _next_cursor(self, cursor: Cursor, snap: Snapshot, rows: list[Row]) -> Cursor:
        """Where the next poll starts: the newest row read, and the bound below which no
        row of a transaction open now (or starting after the listing) can be stamped."""
        opened = snap.opened
        checked = opened.checked - START_MARGIN
        still = {pid: cursor.open.get(pid, cursor.checked.isoformat()) for pid in opened.open}
        low = min([checked, *map(_time, still.values())])
        newest = max([cursor.time, *(r.time for r in rows if r.time is not None)])
        return Cursor(time=newest, low=min(low, newest), checked=checked,
                      xmin=snap.xmin, open=still)

    def _translate(self, rows: list[Row]) -> tuple[list[Event], list[tuple[Row, str]]]:
        events, bad = [], []
        for row in rows:
            try:
                events.append(to_event(row, max_failure_chars=self.cfg.max_failure_chars,
                                       link=self.cfg.link))
            except Exception as exc:  # one bad row must not stop the rows after it
                bad.append((row, f"{type(exc).__name__}: {exc}"))
        return events, bad

    def _quarantine(self, state: StateView, plan: StatePlan,
                    bad: list[tuple[Row, str]]) -> int:
        """Quarantine each poison row once (remembered by its columns), with the reason."""
        done: set[str] = set()
        for row, reason in bad:
            key = poison_key(row)
            if key in done or state.snapshot(POISON_NAMESPACE, key) is not None:
                continue
            done.add(key)
            raw = json.dumps(describe_row(row), ensure_ascii=False, sort_keys=True)
            plan.quarantine.append(QuarantineItem(
                QUARANTINE_KIND, raw.encode(), error=reason, reason="poison",
                origin=f"transactions row {describe_row(row)['ctid']}"))
            plan.snapshots[(POISON_NAMESPACE, key)] = raw
            log.warning("wanna-build: row %s skipped and quarantined: %s", raw, reason)
        if done:
            plan.counters["wanna-build.poison_rows"] = len(done)
        return len(done)

    def _baseline(self, snap: Snapshot) -> PollResult:
        """First run: start at the newest row; remember what a later read could re-find."""
        newest = snap.newest()
        opened = snap.opened
        guess = snap.now - self.overlap  # when the transactions open now may have started
        checked = opened.checked - START_MARGIN
        low = min(checked, guess) if opened.open else checked
        time = newest if newest is not None else low
        seen = snap.late(low, time, snap.xmin) if time > low else []
        self.last_rows_read = snap.rows_read
        self.last_late = self.last_poison = 0
        cursor = Cursor(time=time, low=min(low, time), checked=checked, xmin=snap.xmin,
                        open={pid: guess.isoformat() for pid in opened.open})
        keys = sorted({event_key(r) for r in seen if r.time is not None})
        plan = StatePlan(cursors={CURSOR: cursor.dump()}, counters={"wanna-build.polls": 1})
        plan.snapshots[(NAMESPACE, BASELINE)] = json.dumps(
            {"until": max(r.time for r in seen if r.time).isoformat(), "keys": keys}) \
            if keys else None
        return PollResult([], plan, summary=f"first run: starts at the newest row "
                                            f"({cursor.time.isoformat()}); nothing published")

def snap_local(snap: Snapshot, when: dt.datetime) -> dt.datetime:
    """``when`` as the database's naive local time (an aware time is converted by it)."""
    return snap.local(when) if when.tzinfo is not None else when


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def _load_baseline(value: str | None) -> dict | None:
    return json.loads(value) if value else None


def check(cfg: WannaBuildSettings) -> None:
    """Configuration errors that need no database (raised at start-up, not per poll)."""
    if not cfg.dsn.strip():
        raise ConfigError("no database configured (e.g. \"service=wanna-build\" or "
                          "\"host=... dbname=wanna-build user=busgate\")", key="wannabuild.dsn")
    if describe(cfg.dsn) == "(invalid dsn)":
        raise ConfigError("not a valid libpq connection string", key="wannabuild.dsn")
    from adapters.wannabuild.source import validate

    validate(cfg, None)  # since, time zone: what check-config refuses too
    for key, value in (("overlap_seconds", cfg.overlap_seconds), ("batch_rows", cfg.batch_rows),
                       ("statement_timeout_ms", cfg.statement_timeout_ms),
                       ("max_failure_chars", cfg.max_failure_chars)):
        if value <= 0:
            raise ConfigError(f"must be greater than 0, not {value}", key=f"wannabuild.{key}")


def from_settings(settings: Settings, options: Any = None, *, since: dt.datetime | None = None,
                  dsn: str | None = None) -> WannaBuildPoller:
    """The poller factory, ``factory(settings, options)``: ``options`` is the ``busgate
    poll wanna-build`` namespace (its ``--since`` and ``--dsn``), or None inside
    ``busgate run``; ``since``/``dsn`` given here win."""
    cfg = settings.wannabuild
    if options is not None:
        if since is None and getattr(options, "since", None):
            since = parse_since(options.since, key="--since")
        dsn = dsn if dsn is not None else getattr(options, "dsn", None)
    if dsn is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, dsn=dsn)
    check(cfg)
    return WannaBuildPoller(cfg, since=since)
