"""The wanna-build poller: new ``transactions`` rows -> ``wanna-build.build.<state>`` events.

``transactions`` has no serial id, and wanna-build stamps each row with ``now()``,
the *start* of the writing transaction, so a long transaction (a merge-v3 run)
makes rows visible after rows with later timestamps. The cursor is therefore a
pair: ``time``, the newest row time read, and ``now``, the database clock of the
snapshot that read it. A row not visible in that snapshot has ``time > now -
overlap`` as long as no writing transaction lasts longer than ``overlap_seconds``,
so the next poll looks again at ``(min(time, now - overlap), time]`` (the
overlap window) besides everything after ``time``; rows already in the outbox are
recognised by their event key and dropped, so a late row is published exactly
once. The poller remembers the rows it committed inside the window: when the
database counts exactly as many rows there (an index range count), no row came
late and the window is not fetched again. So a poll ships the new rows only; the
window's rows travel again only after a late commit or a restart.
``transactions`` is append-only: were rows of the last ``overlap_seconds`` deleted
while as many others committed late, the count could not tell.

Both reads are index-backed range reads in one read-only snapshot. Events and
the cursor commit in ONE store transaction: a crash between reading and
committing repeats the read, a database failure raises
:class:`~gateway.errors.TransientError` before anything is written.

A first run (no cursor) publishes nothing: it records the newest row as the
start, and the keys of the rows already visible inside the overlap window (so a
row still being written at that moment is published, one already there is not).
``wannabuild.since`` (first run) or ``busgate poll wanna-build --since`` (any run)
start at a given time instead; rows already in the outbox are skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import zoneinfo
from dataclasses import dataclass

from adapters.wannabuild.query import Reader, Snapshot, describe
from adapters.wannabuild.translate import Row, event_key, to_event
from gateway.config import Settings, WannaBuildSettings
from gateway.errors import ConfigError
from gateway.event import Event
from gateway.store import Store

log = logging.getLogger(__name__)

CURSOR = "wanna-build"
NAMESPACE = "wanna-build"
BASELINE = "baseline"
ONE_TICK = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Cursor:
    #: Newest ``transactions.time`` read (every row visible at or before it was read).
    time: dt.datetime
    #: Database clock (LOCALTIMESTAMP) of the snapshot that read it.
    now: dt.datetime

    def dump(self) -> str:
        return json.dumps({"time": self.time.isoformat(), "now": self.now.isoformat()})

    @classmethod
    def load(cls, value: str | None) -> Cursor | None:
        if value is None:
            return None
        data = json.loads(value)
        return cls(dt.datetime.fromisoformat(data["time"]), dt.datetime.fromisoformat(data["now"]))


def parse_since(value: str, key: str = "wannabuild.since") -> dt.datetime:
    """An ISO 8601 date or time; without a UTC offset it is the database's local time."""
    try:
        return dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"not an ISO 8601 timestamp: {value!r} (e.g. 2024-05-01T12:00:00Z)",
                          key=key) from None


class _DryRun(Exception):
    """Leaves the store transaction so that a dry run writes nothing."""


class WannaBuildPoller:
    name = "wanna-build"

    def __init__(self, cfg: WannaBuildSettings, *, since: dt.datetime | None = None,
                 reader: Reader | None = None):
        self.cfg = cfg
        self.overlap = dt.timedelta(seconds=cfg.overlap_seconds)
        self.first_since = parse_since(cfg.since) if cfg.since else None
        #: ``--since``: where the next poll starts, whatever the cursor says (used once).
        self.rewind = since
        self.reader = reader or Reader(
            cfg.dsn, statement_timeout_ms=cfg.statement_timeout_ms,
            connect_timeout=cfg.connect_timeout, timezone=cfg.timezone,
            max_failure_chars=cfg.max_failure_chars)
        #: Figures of the last poll: rows fetched, rows in the overlap window that were new.
        self.last_rows_read = 0
        self.last_late = 0
        #: (time, key) of every row committed inside the overlap window, valid while the
        #: store's cursor is ``_window_cursor`` (nobody else polled in between).
        self._window: list[tuple[dt.datetime, str]] = []
        self._window_cursor: str | None = None

    def close(self) -> None:
        self.reader.close()

    # -- one poll ------------------------------------------------------------------------
    def poll(self, store: Store, *, dry_run: bool = False) -> list[Event]:
        stored = store.cursor(CURSOR)
        cursor = Cursor.load(stored)
        baseline = _load_baseline(store.snapshot(NAMESPACE, BASELINE))
        window = self._window if stored is not None and stored == self._window_cursor else []
        late_rows: list[Row] | None = None
        with self.reader.snapshot() as snap:
            start = self.rewind if self.rewind is not None else \
                self.first_since if cursor is None else None
            if start is not None:
                low = snap_local(snap, start) - ONE_TICK
                cursor = Cursor(time=low, now=low + self.overlap)
                baseline, window = None, []
            if cursor is None:
                return self._baseline(store, snap, dry_run)
            low = min(cursor.time, cursor.now - self.overlap)
            window = [(t, k) for t, k in window if low < t <= cursor.time]
            if low < cursor.time and snap.count_between(low, cursor.time) != len(window):
                late_rows = snap.between(low, cursor.time)
            rows, more = snap.after(cursor.time, self.cfg.batch_rows)
            now = snap.now
            self.last_rows_read = snap.rows_read
        new_cursor = Cursor(time=max([cursor.time, *(r.time for r in rows)]), now=now)
        skip = set(baseline["keys"]) if baseline else set()
        keep_baseline = bool(baseline) and low < _time(baseline["until"])
        seen = {key for _, key in window}
        late: list[Event] = []
        if late_rows is not None:
            window = []
            for row in late_rows:
                key = event_key(row)
                window.append((row.time, key))
                if key not in seen and key not in skip:
                    late.append(to_event(row, max_failure_chars=self.cfg.max_failure_chars))
        events = [to_event(r, max_failure_chars=self.cfg.max_failure_chars) for r in rows]
        window += [(e_row.time, e.key) for e_row, e in zip(rows, events, strict=True)]
        late_keys = {e.key for e in late}
        try:
            with store.transaction() as tx:
                fresh: dict[str, Event] = {}
                for event in (*late, *events):
                    if event.key not in skip and event.key not in fresh \
                            and not tx.has_key(event.key):
                        fresh[event.key] = event
                published = list(fresh.values())
                self.last_late = sum(1 for key in fresh if key in late_keys)
                if dry_run:
                    raise _DryRun
                tx.add_events(published)
                tx.set_cursor(CURSOR, new_cursor.dump())
                if baseline and not keep_baseline:
                    tx.delete_snapshot(NAMESPACE, BASELINE)
                tx.bump("wanna-build.polls")
                tx.bump("wanna-build.rows_read", self.last_rows_read)
                if self.last_late:
                    tx.bump("wanna-build.late_rows", self.last_late)
        except _DryRun:
            pass
        else:
            self.rewind = None
            self._remember(window, new_cursor)
        if self.last_late:
            log.info("wanna-build: %d row(s) committed late (inside the %g s overlap window) "
                     "published now", self.last_late, self.cfg.overlap_seconds)
        log.info("wanna-build poll: %d rows read, %d new events%s", self.last_rows_read,
                 len(published), ", more rows pending" if more else "")
        return published

    def _remember(self, window: list[tuple[dt.datetime, str]], cursor: Cursor) -> None:
        """Keep what the next poll's window holds (rows after its lower bound)."""
        low = min(cursor.time, cursor.now - self.overlap)
        self._window = [(t, k) for t, k in window if t > low]
        self._window_cursor = cursor.dump()

    def _baseline(self, store: Store, snap: Snapshot, dry_run: bool) -> list[Event]:
        """First run: start at the newest row; remember what the overlap window holds."""
        newest = snap.newest()
        low = snap.now - self.overlap
        seen = snap.between(low, newest) if newest is not None and newest > low else []
        self.last_rows_read = snap.rows_read
        self.last_late = 0
        cursor = Cursor(time=newest if newest is not None else low, now=snap.now)
        if dry_run:
            return []
        window = [(r.time, event_key(r)) for r in seen]
        with store.transaction() as tx:
            tx.set_cursor(CURSOR, cursor.dump())
            if seen:
                keys = sorted({key for _, key in window})
                tx.put_snapshot(NAMESPACE, BASELINE, json.dumps(
                    {"until": max(r.time for r in seen).isoformat(), "keys": keys}))
            else:
                tx.delete_snapshot(NAMESPACE, BASELINE)
            tx.bump("wanna-build.polls")
        self._remember(window, cursor)
        log.info("wanna-build: first run starts at the newest row (%s); nothing published",
                 cursor.time.isoformat())
        return []


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
    if cfg.since:
        parse_since(cfg.since)
    if cfg.timezone:
        try:
            zoneinfo.ZoneInfo(cfg.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"unknown time zone {cfg.timezone!r}",
                              key="wannabuild.timezone") from None
    for key, value in (("overlap_seconds", cfg.overlap_seconds), ("batch_rows", cfg.batch_rows),
                       ("statement_timeout_ms", cfg.statement_timeout_ms),
                       ("max_failure_chars", cfg.max_failure_chars)):
        if value <= 0:
            raise ConfigError(f"must be greater than 0, not {value}", key=f"wannabuild.{key}")


def from_settings(settings: Settings, *, since: dt.datetime | None = None,
                  dsn: str | None = None) -> WannaBuildPoller:
    """The poller the daemon schedules (``since``/``dsn``: ``busgate poll`` overrides)."""
    cfg = settings.wannabuild
    if dsn is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, dsn=dsn)
    check(cfg)
    return WannaBuildPoller(cfg, since=since)
