"""The poller's only SQL: read-only, parameterized, time-bounded reads of wanna-build.

Each poll is one ``REPEATABLE READ, READ ONLY`` transaction (one consistent
snapshot for the clock and every range read) with a transaction-local
``statement_timeout``. Every database failure becomes a
:class:`~gateway.errors.TransientError` whose message names what is wrong (server
down, connection lost mid-poll, permission denied, a missing table or column, a
timeout), so the scheduler retries with back-off and nothing is committed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pgerr
from psycopg.conninfo import conninfo_to_dict

from adapters.wannabuild.translate import MAX_FIELD_CHARS, Row
from gateway.errors import TransientError

log = logging.getLogger(__name__)

APPLICATION_NAME = "busgate-wanna-build"

#: Columns busgate reads; named in the error when the schema lacks one.
TRANSACTIONS_COLUMNS = ("architecture", "package", "distribution", "version", "action",
                        "prevstate", "state", "real_user", "set_user", "time")
PACKAGES_COLUMNS = ("architecture", "package", "distribution", "version", "state", "builder",
                    "failed", "binary_nmu_version", "notes", "depends")

# One statement text per read; only values travel as parameters. Long free text is cut
# in the database (one character more than kept, to see truncation). ``time`` is read
# only when Python can hold it (years 1..9999): ``infinity`` or year 20000 would make
# the driver fail the whole read, so such a row arrives with ``time`` NULL and its raw
# text, and the poller quarantines it instead of failing every poll.
SANE_TIME = """t."time" >= '0001-01-01' AND t."time" < '10000-01-01'"""
_SELECT = f"""

SELECT left(t.architecture, %(field)s), left(t.package, %(field)s),
       left(t.distribution, %(field)s), left(t.version::text, %(field)s),
       left(t.action, %(field)s), left(t.prevstate, %(field)s), left(t.state, %(field)s),
       left(t.real_user, %(field)s), left(t.set_user, %(field)s),
       CASE WHEN {SANE_TIME} THEN t."time" END,
       CASE WHEN {SANE_TIME} THEN extract(epoch FROM t."time"::timestamptz)::float8 END,
       p.architecture IS NOT NULL, p.version::text, p.state,
       left(p.builder, %(field)s), left(p.failed, %(failed)s),
       p.binary_nmu_version, left(p.notes, %(field)s), left(p.depends, %(field)s),
       left(t."time"::text, 64), t.ctid::text
FROM transactions t
LEFT JOIN packages p
  ON p.architecture = t.architecture AND p.package = t.package
 AND p.distribution = t.distribution
"""  # noqa: S608
# ctid: the order the rows were written in (append-only table); the state chain decides.
_ORDER = ' ORDER BY t."time", t.architecture, t.distribution, t.package, t.ctid'
#: Rows written by a transaction the previous snapshot could not see: inserting xid at or
#: after that snapshot's xmin (32-bit, modulo wrap-around; subtransactions included).
_UNSEEN = ("((t.xmin::text::bigint - %(xmin32)s + 4294967296) %% 4294967296) < %(span)s")
SQL_AFTER = (_SELECT + ' WHERE t."time" > %(low)s AND t."time" < \'10000-01-01\'' + _ORDER
             + " LIMIT %(limit)s")
SQL_AT = _SELECT + ' WHERE t."time" = %(at)s' + _ORDER
SQL_LATE = (_SELECT + ' WHERE t."time" > %(low)s AND t."time" <= %(high)s AND ' + _UNSEEN
            + _ORDER)
SQL_POISON = (_SELECT + ' WHERE (t."time" IS NULL OR t."time" < \'0001-01-01\''
              ' OR t."time" >= \'10000-01-01\') AND ' + _UNSEEN + ' ORDER BY t.ctid'
              + " LIMIT %(limit)s")
SQL_NEWEST = ('SELECT max("time") FROM transactions'
              ' WHERE "time" >= \'0001-01-01\' AND "time" < \'10000-01-01\'')
#: Before the snapshot: the database clock and every transaction open in this database
#: (with or without an xid yet; pg_locks is readable by any role), so that a transaction
#: still open, however old, is known by the next poll.
SQL_OPEN = """
SELECT timezone(coalesce(nullif(%(tz)s, ''), current_setting('TimeZone')), statement_timestamp()),
       coalesce(array_agg(l.pid::text || '/' || l.virtualxid), '{}')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'virtualxid' AND l.granted AND l.pid <> pg_backend_pid()
  AND a.datname = current_database()
"""
SQL_SNAPSHOT = ("SELECT LOCALTIMESTAMP, pg_snapshot_xmin(s)::text::bigint,"
                " pg_snapshot_xmax(s)::text::bigint FROM pg_current_snapshot() s")
SQL_TIME_INDEX = """
SELECT EXISTS (
    SELECT 1 FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = to_regclass('transactions') AND a.attname = 'time')
"""


def describe(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, for messages (never the password)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(invalid dsn)"
    if "service" in params and "host" not in params:
        return f"service {params['service']}"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


#: A span that makes :data:`_UNSEEN` true for every row (no earlier snapshot known).
EVERY_XID = 2**32


@dataclass(frozen=True)
class Opened:
    """What :data:`SQL_OPEN` saw just before the snapshot."""

    #: Database clock (its local time) when the open transactions were listed.
    checked: dt.datetime
    #: ``pid/vxid`` of every transaction then open in the database (other than ours).
    open: tuple[str, ...]


class Snapshot:
    """Reads inside one read-only transaction; ``now`` is the database clock at its start,
    ``xmin``/``xmax`` the bounds of its MVCC snapshot (64-bit xids), ``opened`` what was
    open just before it was taken."""

    def __init__(self, conn: psycopg.Connection[Any], now: dt.datetime, max_failure_chars: int,
                 xmin: int = 0, xmax: int = 0, opened: Opened | None = None):
        self._conn = conn
        self.now = now
        self.xmin = xmin
        self.xmax = xmax
        self.opened = opened or Opened(now, ())
        self._limits = {"field": MAX_FIELD_CHARS + 1, "failed": max_failure_chars + 1}
        #: Rows fetched by this snapshot (all reads), for logs and the benchmark.
        self.rows_read = 0

    def newest(self) -> dt.datetime | None:
        """Time of the newest ``transactions`` row (a backward index scan)."""
        return self._conn.execute(SQL_NEWEST).fetchone()[0]  # type: ignore[index]

    def unseen(self, since_xmin: int | None) -> dict[str, int]:
        """Parameters of :data:`_UNSEEN`: rows by xids ``>= since_xmin`` (None: every row)."""
        if since_xmin is None:
            return {"xmin32": 0, "span": EVERY_XID}
        return {"xmin32": since_xmin % 2**32, "span": min(EVERY_XID, self.xmax - since_xmin)}

    def late(self, low: dt.datetime, high: dt.datetime, since_xmin: int | None) -> list[Row]:
        """Rows with ``low < time <= high`` written by xids ``>= since_xmin``: the rows of
        transactions the snapshot with that xmin could not see yet."""
        return self._rows(SQL_LATE, {"low": low, "high": high, **self.unseen(since_xmin)})

    def poison(self, since_xmin: int | None, limit: int) -> list[Row]:
        """Rows with a NULL or out-of-range ``time`` by xids ``>= since_xmin``."""
        return self._rows(SQL_POISON, {"limit": limit, **self.unseen(since_xmin)})

    def after(self, low: dt.datetime, limit: int) -> tuple[list[Row], bool]:
        """The oldest rows with ``time > low``: about ``limit`` of them, never splitting rows
        that share a timestamp; and whether more remain."""
        rows = self._rows(SQL_AFTER, {"low": low, "limit": limit})
        if len(rows) < limit:
            return rows, False
        last = rows[-1].time
        ties = self._rows(SQL_AT, {"at": last})
        return [r for r in rows if r.time < last] + ties, True

    def local(self, when: dt.datetime) -> dt.datetime:
        """An aware time as the database's naive local time (the type of ``time``)."""
        return self._conn.execute("SELECT %s::timestamptz::timestamp",  # type: ignore[index]
                                  (when,)).fetchone()[0]

    def _rows(self, sql: str, params: dict[str, Any]) -> list[Row]:
        cur = self._conn.execute(sql, {**params, **self._limits})  # type: ignore[arg-type]
        rows = [Row(*record) for record in cur]
        self.rows_read += len(rows)
        return rows


class Reader:
    """A connection to the wanna-build database, reopened after any failure."""

    def __init__(self, dsn: str, *, statement_timeout_ms: int = 30000,
                 connect_timeout: float = 10.0, timezone: str = "",
                 max_failure_chars: int = 4000):
        self.dsn = dsn
        self.where = describe(dsn)
        self.statement_timeout_ms = statement_timeout_ms
        self.connect_timeout = connect_timeout
        self.timezone = timezone
        self.max_failure_chars = max_failure_chars
        self._conn: psycopg.Connection[Any] | None = None
        #: Whether ``transactions`` has an index led by ``time`` (checked per connection).
        self.time_index: bool | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """One read-only transaction; any database error leaves as a TransientError."""
        try:
            conn, (now, xmin, xmax, opened) = self._begin()
        except psycopg.Error as exc:
            connecting = self._conn is None
            self.close()
            raise self.explain(exc, connecting=connecting) from None
        try:
            yield Snapshot(conn, now, self.max_failure_chars, xmin, xmax, opened)
        except psycopg.Error as exc:
            self.close()
            raise self.explain(exc) from None
        except BaseException:
            self.close()
            raise
        try:
            conn.execute("ROLLBACK")  # read only: nothing to commit
        except psycopg.Error as exc:
            self.close()
            raise self.explain(exc) from None

    def _begin(self) -> tuple[psycopg.Connection[Any],
                              tuple[dt.datetime, int, int, Opened]]:
        reused = self._conn is not None and not self._conn.closed
        if not reused:
            self._connect()
        try:
            return self._conn, self._start()  # type: ignore[return-value]
        except psycopg.OperationalError:
            if not reused:
                raise
            # the server dropped an idle connection (restart, idle timeout): retry once
            log.info("wanna-build database %s: idle connection lost, reconnecting", self.where)
            self.close()
            self._connect()
            return self._conn, self._start()  # type: ignore[return-value]

    def _connect(self) -> None:
        self._conn = None
        params = conninfo_to_dict(self.dsn)
        extra: dict[str, Any] = {}
        if "application_name" not in params:
            extra["application_name"] = APPLICATION_NAME
        if "connect_timeout" not in params:
            extra["connect_timeout"] = max(1, round(self.connect_timeout))
        self._conn = psycopg.connect(self.dsn, autocommit=True, **extra)
        self.time_index = None

    def _start(self) -> tuple[dt.datetime, int, int, Opened]:
        conn = self._conn
        assert conn is not None
        checked, pids = conn.execute(SQL_OPEN, {"tz": self.timezone}).fetchone()  # type: ignore[misc]
        opened = Opened(checked, tuple(sorted(pids)))
        conn.execute("BEGIN")
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute("SELECT set_config('statement_timeout', %s, true)",
                     (str(int(self.statement_timeout_ms)),))
        if self.timezone:
            conn.execute("SELECT set_config('TimeZone', %s, true)", (self.timezone,))
        now, xmin, xmax = conn.execute(SQL_SNAPSHOT).fetchone()  # type: ignore[misc]
        if self.time_index is None:
            self.time_index = bool(conn.execute(SQL_TIME_INDEX).fetchone()[0])  # type: ignore[index]
            if not self.time_index:
                log.warning("wanna-build database %s: transactions has no index on \"time\"; "
                            "every poll scans the whole table. Ask the DBA for: CREATE INDEX "
                            "transactions_time ON transactions (\"time\")", self.where)
        return now, int(xmin), int(xmax), opened

    def explain(self, exc: psycopg.Error, *, connecting: bool = False) -> TransientError:
        """A TransientError saying, in words, what went wrong with the database."""
        where = f"wanna-build database {self.where}"
        text = str(exc).strip()
        primary = (exc.diag.message_primary if exc.diag and exc.diag.message_primary
                   else text.splitlines()[0] if text else type(exc).__name__)
        if isinstance(exc, pgerr.UndefinedColumn | pgerr.UndefinedTable):
            return TransientError(
                f"{where}: schema mismatch: {primary}. busgate reads transactions("
                f"{', '.join(TRANSACTIONS_COLUMNS)}) and packages({', '.join(PACKAGES_COLUMNS)})")
        if isinstance(exc, pgerr.InsufficientPrivilege):
            return TransientError(
                f"{where}: permission denied: {primary}. Grant the poller's role SELECT on "
                "transactions and packages (it needs nothing else)")
        if isinstance(exc, pgerr.QueryCanceled):
            return TransientError(
                f"{where}: query cancelled after statement_timeout "
                f"({self.statement_timeout_ms} ms) or by an operator: {primary}")
        if isinstance(exc, pgerr.AdminShutdown | pgerr.CrashShutdown | pgerr.CannotConnectNow):
            return TransientError(
                f"{where}: connection lost mid-poll (server restarting or backend "
                f"terminated): {primary}")
        if isinstance(exc, psycopg.OperationalError):
            if connecting:
                return TransientError(f"{where}: cannot connect: {primary}")
            return TransientError(f"{where}: connection lost mid-poll (server restarted or "
                                  f"unreachable): {primary}")
        return TransientError(f"{where}: {type(exc).__name__}: {primary}")
