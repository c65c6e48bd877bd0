"""The history on PostgreSQL: the same :class:`~gateway.history.store.HistoryStore` calls
as SQLite, for deployments that want a database server (no TimescaleDB needed).

Schema: ``migrations/postgres/NNN_*.sql``, applied on open by
:func:`gateway.history.migrate.apply_postgres` (one transaction per file, under an
advisory lock). ``contains`` is ``body ILIKE '%term%'`` (``%``, ``_`` and ``\\`` escaped)
served by a pg_trgm GIN index: any substring of 3 or more characters, non-ASCII
included, case folded by the database's LC_CTYPE (a ``C`` database folds ASCII only).
That index (``011_contains_facets.sql``) holds the topic and category beside the
trigrams of the body's words (``history_words()``: the punctuation of names and URLs
made a letter, so "debian.org" is one word), so a term with a topic is one intersection
in it. Which way a page is read is decided on the query itself (:func:`_probe`): the
newest rows of the rest of the query first, where a frequent term fills the page, else
the intersection, where a rare one (or one never seen with the topic) is proved in
milliseconds; the planner alone multiplies frequencies and read a million rows in time
order for an empty answer.

``total`` is counted under a budget (``history.count_budget_ms``), as Elasticsearch's
``track_total_hits`` bounds its count: the page is read first (one row more than asked,
so it knows whether another follows), and when it holds the last match the total is
known without counting; otherwise the count runs (up to ``history.count_limit``) under
its own ``statement_timeout``. Past the budget the answer is the lower bound the page
proves (the rows before it, its own, and one more when another follows) with
``capped`` (``total_capped``): its rows are exact, and ``pages`` always reaches past a
page that has a next one, so clients paging by ``page`` or ``cursor`` go on. Why: a
frequent word's count checks ``count_limit`` rows against the body (a trigram index
only finds candidates, and past ``work_mem`` its bitmap turns lossy): 0.5-1.7 s at a
million messages on a loaded machine, while the page (newest rows first) took 13-27 ms
(EXPLAIN ANALYZE, load 11).

Bounds: at most ``history.pool_size`` connections (:mod:`psycopg_pool`; a writer has one
more, its :class:`PendingCleaner`'s), a request waits for a free one at most
``history.query_timeout``, else :class:`QueryTimeout`; and every read runs under
``SET LOCAL statement_timeout`` = ``history.query_timeout``, so
the server itself cancels a query that would hold a worker (:class:`QueryTimeout`).

The write path (issue 14, measured at a million stored): a batch is one statement
(:data:`_ADD_BATCH`) whose rollups 007's statement triggers count once per batch; the
trigram index's pending list is 16 MB (008), merged beside the writes by a connection of
its own (:class:`PendingCleaner`), not by the insert that fills it; the links' keys are
checked where a link can lose its target, not per link inserted (010). A batch is
written in up to ``history.write_parts`` (:data:`WRITE_PARTS`) concurrent transactions of
at least :data:`MIN_PART` messages, one backend each (:meth:`PostgresHistory._add_parts`):
~90% of a batch's time is the server's, one backend's work, and the recorder waits for
it. What remains per
message is the schema's own: the heap row, six btrees and the trigram index on
``messages`` (its trigrams ~100 us of the ~200 us of server CPU a message costs), two
btrees per link, and, past ``shared_buffers``, reading and writing back the random pages
of the msg_id and link indexes. ``synchronous_commit`` stays on:
the position is committed after PostgreSQL acknowledges the batch (below), so a batch
acknowledged but not yet flushed would be lost by a server crash with the position
already past it; one WAL flush per batch (1,000 messages) is not what costs.

Why the recorder's position is not in PostgreSQL, and why that neither loses nor
doubles: the consumer's position is a local SQLite file
(``<state.dir>/history-position.sqlite``, ``history.position``) written by the same
code as every other consumer's. The recorder commits each batch
(``history.batch_messages``, at most ``history.batch_ms``) in PostgreSQL *first*
(:meth:`~gateway.history.recorder.Recorder.flush`, :meth:`PostgresHistory.add_many`:
every part of it), and only then does the consumer commit the position past it. So at
any instant the position is at or behind what PostgreSQL holds. A kill -9 between the
two commits (or between two parts' commits) leaves the batch (or some of its parts)
stored and the position before it: the restarted recorder asks the
publisher's replay for everything after the position, gets those messages again, and
``INSERT ... ON CONFLICT (msg_id) DO NOTHING`` makes them no-ops: nothing lost (the
position never passes an uncommitted message) and nothing doubled (``msg_id`` is
UNIQUE). A write PostgreSQL refuses for want of a connection (server down or
restarting) raises :class:`~gateway.consumer.NotHandled`, so the position stays
before the batch and the recorder stops (``busgate run`` starts it again; ``busgate
record`` exits 75).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.history import migrate
from gateway.history.records import Record
from gateway.history.store import (
    BATCH,
    MAX_TOP,
    MAX_TOPICS,
    HistoryError,
    HistoryStore,
    Page,
    Position,
    QueryTimeout,
    Stored,
    check_range,
    name_count_parts,
    page_of,
    topic_count_parts,
)

if TYPE_CHECKING:
    from gateway.history.query import Query

log = logging.getLogger(__name__)

T = TypeVar("T")
Conn = psycopg.Connection[Any]

#: Seconds to reach the server (a history that is down fails fast, with the reason).
CONNECT_TIMEOUT = 10
#: The activity rollup's unit (``002_activity.sql``).
HOUR = 3600
#: Most user (and package) name ids one store keeps in memory.
MAX_CACHED_NAMES = 100_000
#: ``history.count_budget_ms``'s default: milliseconds a ``/raw`` count may run.
COUNT_BUDGET_MS = 150
#: Seconds a write waits for a free pool connection before giving up.
WRITE_WAIT = 30.0
#: Transactions a batch is written in at once by default (``history.write_parts``), each
#: on a backend of its own: the server's work on a message (heap, btrees, the trigram
#: index: ~250 us at a million stored, five times the recorder's) is one backend's, so
#: one transaction uses one core. Two: this default machine's cores; a server with cores
#: to spare takes more.
WRITE_PARTS = 2
#: Fewest messages in a part: a smaller batch is one transaction (a part costs a commit
#: and a round trip more).
MIN_PART = 250
#: Seconds the pending-list cleaner sleeps when no batch wakes it, and most a merge may
#: run (its connection's ``statement_timeout``).
CLEAN_IDLE = 30.0
CLEAN_TIMEOUT = 120.0
#: Newest rows of a topic or category (in the page's order) a ``contains`` with it reads
#: first (:meth:`PostgresHistory.search`): a term frequent in them fills the page there.
PROBE_ROWS = 2000
#: Share of those rows a term must match for its count to read rows in order, not
#: through the index (whose recheck of each candidate reads ``history_words()`` again:
#: a seq scan to count 10,000 of debian.org's 760,000 read 13,000 rows, 85 ms).
DENSE = 0.25
#: What ``history_words()`` (``011_contains_facets.sql``) does to a text: these become
#: ``q``, one for one (never LIKE's own ``%``, ``_`` and ``\``).
PUNCTUATION = ".-/:@+~#,="
_WORDS = str.maketrans(PUNCTUATION, "q" * len(PUNCTUATION))
#: ``kind`` of :meth:`PostgresHistory.top_names` -> (names table, link table, key column).
_KINDS = {"users": ("users", "user_messages", "user_id"),
          "packages": ("packages", "package_messages", "package_id")}


def describe(url: str) -> str:
    """``host:port/dbname`` of a connection URL (for messages: never its password)."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "(unparsable PostgreSQL URL)"
    return f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}/" \
           f"{parts.get('dbname') or parts.get('user') or ''}"


#: One message with its user and package links, in one statement (the links only when
#: the message is new); its one row says whether it was.
_ADD = ("WITH m AS (INSERT INTO messages (msg_id, topic, category, timestamp, publisher,"
        " seq_id, envelope, body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (msg_id) DO NOTHING RETURNING id, timestamp, category),"
        " u AS (INSERT INTO user_messages (user_id, timestamp, message_id, category)"
        " SELECT unnest(%s::bigint[]), m.timestamp, m.id, m.category FROM m"
        " ON CONFLICT DO NOTHING),"
        " p AS (INSERT INTO package_messages (package_id, timestamp, message_id, category)"
        " SELECT unnest(%s::bigint[]), m.timestamp, m.id, m.category FROM m"
        " ON CONFLICT DO NOTHING)"
        " SELECT COUNT(*) FROM m")
#: A batch of messages with their links in one statement: the rows come as columns
#: (arrays, in the batch's order: ids follow it), the messages already stored are
#: skipped by msg_id (a concurrent writer's included), and only the new ones' links are
#: written (joined by msg_id). One statement instead of one per message: at a million
#: stored, the per-message statements and row triggers were most of a batch's time.
#: The arrays go in binary (``%b``): as text, psycopg escapes every quote of every
#: envelope's JSON (a regex substitution per character to escape: ~40% of the
#: recorder's client CPU in a batch, cProfile).
_ADD_BATCH = ("WITH m AS (INSERT INTO messages (msg_id, topic, category, timestamp, publisher,"
              " seq_id, envelope, body) SELECT * FROM unnest(%b::text[], %b::text[],"
              " %b::text[], %b::float8[], %b::text[], %b::bigint[], %b::text[], %b::text[])"
              " ON CONFLICT (msg_id) DO NOTHING RETURNING id, msg_id, timestamp, category),"
              " u AS (INSERT INTO user_messages (user_id, timestamp, message_id, category)"
              " SELECT l.name_id, m.timestamp, m.id, m.category"
              " FROM unnest(%b::text[], %b::bigint[])"
              " AS l(msg_id, name_id) JOIN m USING (msg_id) ON CONFLICT DO NOTHING),"
              " p AS (INSERT INTO package_messages (package_id, timestamp, message_id, category)"
              " SELECT l.name_id, m.timestamp, m.id, m.category"
              " FROM unnest(%b::text[], %b::bigint[])"
              " AS l(msg_id, name_id) JOIN m USING (msg_id) ON CONFLICT DO NOTHING)"
              " SELECT COUNT(*) FROM m")
#: :data:`_ADD_BATCH` with the message ids given (allocated beforehand from the identity,
#: in the batch's order): a batch written in parts keeps ids in arrival order.
_ADD_PART = _ADD_BATCH.replace(
    "INSERT INTO messages (msg_id,", "INSERT INTO messages (id, msg_id,").replace(
    " seq_id, envelope, body) SELECT * FROM unnest(%b::text[],",
    " seq_id, envelope, body) OVERRIDING SYSTEM VALUE SELECT * FROM"
    " unnest(%b::bigint[], %b::text[],")
#: ``n`` new message ids (the identity's sequence: never handed out twice).
_NEW_IDS = ("SELECT nextval(pg_get_serial_sequence('messages', 'id'))"
            " FROM generate_series(1, %s)")
#: Every writing transaction takes this lock before its first write, so before it has a
#: transaction id (:meth:`PostgresHistory.transaction`): a transaction that holds an id
#: without holding the lock never writes messages.
_WRITER_LOCK = "LOCK TABLE messages IN ROW EXCLUSIVE MODE"
#: The feed's horizon (006_feed_order.sql): no row with a lower xid can still appear. In
#: this statement's snapshot, the lowest transaction id still running that may write
#: messages -- one holding a write lock on the table, or one that ended after the
#: snapshot was taken (it may have written) -- or else the snapshot's xmax. Transactions
#: on other tables or databases (a long report, another service's batch) hold nothing back.
_HORIZON = ("(SELECT LEAST(pg_snapshot_xmax(s), (SELECT MIN(x) FROM pg_snapshot_xip(s) x"
            " WHERE pg_xact_status(x) <> 'in progress' OR xid(x) IN ("
            "SELECT t.transactionid FROM pg_locks t JOIN pg_locks r"
            " ON r.virtualtransaction = t.virtualtransaction"
            " WHERE t.locktype = 'transactionid' AND r.locktype = 'relation'"
            " AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND r.relation = 'messages'::regclass AND r.mode IN ('RowExclusiveLock',"
            " 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'))))"
            " FROM pg_current_snapshot() s)")
#: The feed: rows after a position, only below the horizon (one range of an index; the
#: horizon's sub-select runs once per statement).
_FEED = ("SELECT m.id, m.msg_id, m.timestamp, m.envelope, m.xid::text AS at"  # noqa: S608 (constants)
         f" FROM messages m WHERE (m.xid, m.id) > (%s::xid8, %s) AND m.xid < {_HORIZON}"
         " ORDER BY m.xid, m.id LIMIT %s")  # m.xid: the column (ORDER BY xid = the text)
_HEAD = ("SELECT m.xid::text AS at, m.id FROM messages m"  # noqa: S608 (constants)
         f" WHERE m.xid < {_HORIZON} ORDER BY m.xid DESC, m.id DESC LIMIT 1")


class NameIds:
    """User and package name -> id, so a message with known names is one statement.
    Ids learnt in a transaction are trusted only once it commits (a rolled-back id
    would break the links' foreign keys); at most :data:`MAX_CACHED_NAMES` per kind."""

    def __init__(self) -> None:
        self.known: dict[str, dict[str, int]] = {kind: {} for kind in _KINDS}
        self.pending: dict[str, dict[str, int]] = {kind: {} for kind in _KINDS}

    def ids(self, db: Conn, kind: str, names: Iterable[str]) -> list[int]:
        """The ids of ``names`` (``kind`` users or packages), creating the new ones."""
        names = list(names)
        known, pending = self.known[kind], self.pending[kind]
        missing = sorted({n for n in names if n not in known and n not in pending})
        if missing:  # sorted: one lock order for concurrent writers
            db.execute(f"INSERT INTO {kind} (name) SELECT unnest(%s::text[])"
                       " ON CONFLICT (name) DO NOTHING", (missing,))
            pending.update((name, id_) for id_, name in db.execute(
                f"SELECT id, name FROM {kind} WHERE name = ANY(%s)", (missing,)))  # noqa: S608
        return [known[n] if n in known else pending[n] for n in names]

    def commit(self) -> None:
        for kind, pending in self.pending.items():
            known = self.known[kind]
            if len(known) + len(pending) > MAX_CACHED_NAMES:
                known.clear()
            known.update(pending)
            pending.clear()

    def rollback(self) -> None:
        for pending in self.pending.values():
            pending.clear()


class PendingCleaner:
    """Merges the trigram index's pending list (008) into the index on a connection of
    its own, woken after each batch commits, so the merge runs beside the recorder's
    next batch instead of inside one.

    Why: with ``fastupdate`` a message's trigrams go to the pending list, and the insert
    that passes ``gin_pending_list_limit`` merges the whole list itself, with
    ``work_mem``: that batch (or that part of it, :meth:`PostgresHistory._add_parts`)
    takes several times as long as the others. ``gin_clean_pending_list`` merges with
    ``maintenance_work_mem``, and an insert that finds a merge running leaves it to it
    (it does not wait). Nothing a search sees changes: the pending list is searched
    too. A role that does not own the index cannot merge it: logged once, and the
    inserts merge as before."""

    def __init__(self, url: str, where: str):
        self.url = url
        self.where = where
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._conn: Conn | None = None
        self._thread = threading.Thread(target=self._main, name="history-gin-clean",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _main(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(CLEAN_IDLE)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                if self._conn is None:
                    self._conn = psycopg.connect(
                        self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                        options=f"-c statement_timeout={int(CLEAN_TIMEOUT * 1000)}")
                self._conn.execute("SELECT gin_clean_pending_list("
                                   "'messages_body_trgm'::regclass)")
            except psycopg.errors.InsufficientPrivilege as exc:
                log.warning("history: %s: the trigram index's pending list is merged by"
                            " the inserts (%s)", self.where, str(exc).strip())
                break
            except psycopg.Error as exc:  # the server restarting: the next batch wakes it
                if not self._stop.is_set():
                    log.debug("history: %s: pending list not merged: %s", self.where, exc)
                self._close()
                self._stop.wait(1.0)
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, cancelling a merge under way (the next one finishes it)."""
        self._stop.set()
        self._wake.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.cancel()
        self._thread.join(timeout)


class PostgresHistory(HistoryStore):
    """The history in a PostgreSQL database (``postgresql://`` URL), migrated on open."""

    def __init__(self, url: str, *, query_timeout: float = 5.0, create: bool = True,
                 pool_size: int = 4, write_wait: float = WRITE_WAIT, readonly: bool = False,
                 count_limit: int = 10_000, count_budget_ms: int = COUNT_BUDGET_MS,
                 write_parts: int = WRITE_PARTS, clean_pending: bool = True):
        self.url = url
        #: Whether batches wake a :class:`PendingCleaner`.
        self.clean_pending = clean_pending
        self.count_limit = count_limit
        # never longer than a whole read may run (0: count without a budget)
        budget = min(count_budget_ms or math.inf, query_timeout * 1000)
        self._count_setup = ("SAVEPOINT count; SET LOCAL statement_timeout ="
                             f" {max(1, math.ceil(budget))}").encode()
        self.write_wait = write_wait
        self._write_lock = threading.Lock()
        #: Transactions a large batch is written in at once (:meth:`_add_parts`).
        self.write_parts = max(1, min(write_parts, pool_size))
        self._executor: ThreadPoolExecutor | None = None
        #: Started by the first batch written (a writer), stopped by :meth:`close`.
        self._cleaner: PendingCleaner | None = None
        self._cleaner_lock = threading.Lock()
        self._names = NameIds()
        self._read_setup = ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;"
                            " SET LOCAL statement_timeout ="
                            f" {max(1, math.ceil(query_timeout * 1000))}").encode()
        self.where = describe(url)
        self.position_path = None
        self.query_timeout = query_timeout
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                if (readonly or not create) and conn.execute(
                        "SELECT to_regclass('history_migrations')").fetchone() == (None,):
                    raise HistoryError(f"no history in {self.where} (run busgate record)")
                if readonly:  # a reader (busgate stats) neither migrates nor writes
                    self._check_schema(conn)
                else:
                    migrate.apply_postgres(conn)
        except (psycopg.Error, migrate.MigrationError) as exc:
            raise HistoryError(f"cannot open the history database {self.where}: "
                               f"{str(exc).strip()}") from None
        # psycopg_pool 3.2 checks a connection before lending it (a restarted server);
        # Debian 12's 3.1 has no check and finds a dead connection on first use instead
        check = getattr(ConnectionPool, "check_connection", None)
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size,
                                    timeout=query_timeout, open=False,
                                    kwargs={"connect_timeout": CONNECT_TIMEOUT},
                                    name="busgate-history",
                                    **({"check": check} if check else {}))
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except PoolTimeout as exc:
            self._pool.close()
            raise HistoryError(f"cannot open the history database {self.where}: {exc}") \
                from None

    def _check_schema(self, conn: Conn) -> None:
        applied = {row[0] for row in conn.execute("SELECT version FROM history_migrations")}
        wanted = migrate.migrations("postgres")
        unknown = applied - {m.version for m in wanted}
        if unknown:
            raise HistoryError(f"the history database {self.where} has schema version "
                               f"{max(unknown)}, newer than this busgate; upgrade busgate")
        missing = [m.name for m in wanted if m.version not in applied]
        if missing:
            raise HistoryError(f"the history database {self.where} lacks "
                               f"{', '.join(missing)}; start busgate record or busgate web "
                               "once to upgrade it")

    # -- writes ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Conn]:
        """One write transaction (one at a time per store: the name-id cache is only
        trusted for names whose transaction committed)."""
        with self._write_lock, self._writing() as conn:
            yield conn

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Conn]:
        """A write transaction on a pool connection, the caller holding ``_write_lock``."""
        try:
            with self._pool.connection(timeout=self.write_wait) as conn:
                conn.execute(_WRITER_LOCK)  # before any write: see _HORIZON
                yield conn  # the pool commits on a normal exit, rolls back otherwise
        except PoolTimeout as exc:
            self._names.rollback()
            raise HistoryError(f"no connection to the history database {self.where}: "
                               f"{exc}") from None
        except BaseException:
            self._names.rollback()
            raise
        self._names.commit()

    def _params(self, db: Conn, record: Record) -> tuple[Any, ...]:
        return (record.msg_id, record.topic, record.category, record.timestamp,
                record.publisher, record.seq_id, record.envelope, record.text,
                self._names.ids(db, "users", record.users),
                self._names.ids(db, "packages", record.packages))

    def add(self, db: Conn, record: Record) -> bool:
        row = db.execute(_ADD, self._params(db, record)).fetchone()
        return bool(row and row[0])

    def add_many(self, records: Iterable[Record]) -> int:
        added = 0
        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) >= BATCH:
                added += self._add_batch(batch)
        if batch:
            added += self._add_batch(batch)
        return added

    def _add_batch(self, batch: list[Record]) -> int:
        """One transaction, three round trips whatever the batch's size: new names (one
        statement per kind), then every message and its links in one set-based
        statement (:data:`_ADD_BATCH`: 007's statement triggers count the rollups once
        per batch). A msg_id twice in the batch is stored once, its first copy. A batch
        of :data:`MIN_PART` messages per part or more is written in parts
        (:meth:`_add_parts`)."""
        first: dict[str, Record] = {}
        for record in batch:
            first.setdefault(record.msg_id, record)
        unique = list(first.values())
        batch.clear()
        parts = max(1, min(self.write_parts, len(unique) // MIN_PART))
        if parts > 1:
            added = self._add_parts(unique, parts)
        else:
            with self.transaction() as db:
                row = db.execute(_ADD_BATCH, (*_columns(unique), *self._links(db, unique))
                                 ).fetchone()
            added = int(row[0]) if row else 0
        if self.clean_pending:
            with self._cleaner_lock:  # one per store, whichever thread writes first
                if self._cleaner is None:
                    self._cleaner = PendingCleaner(self.url, self.where)
                self._cleaner.wake()
        return added

    def _links(self, db: Conn, records: list[Record]) -> list[list[Any]]:
        """The link columns of :data:`_ADD_BATCH` (msg_ids, name ids; users then
        packages), the new names created in ``db``'s transaction."""
        return [column for kind in _KINDS for column in (
            [r.msg_id for r in records for _ in getattr(r, kind)],
            self._names.ids(db, kind, [n for r in records for n in getattr(r, kind)]))]

    def _add_parts(self, unique: list[Record], parts: int) -> int:
        """``unique`` in ``parts`` concurrent transactions, one backend each, so the
        server's work on a batch uses more than one core. Why: at a million stored a
        batch's time is ~90% the server's (trigram index, btrees, foreign keys), one
        backend's, while the recorder's client waits.

        Nothing is lost or doubled: the recorder's position moves only after this
        returns, so after every part committed; a part that fails raises (the others
        may have committed: the batch written again is no-ops for them, ``ON CONFLICT
        (msg_id) DO NOTHING``). Order is kept: the names and the batch's message ids
        (in its order) are taken first, in a transaction of their own, and each part
        takes its transaction id after the part before it took its own, so the feed's
        (xid, id) order is the batch's."""
        size = math.ceil(len(unique) / parts)
        slices = [unique[i:i + size] for i in range(0, len(unique), size)]
        with self._write_lock:
            with self._writing() as db:
                links = [self._links(db, part) for part in slices]
                ids = sorted(row[0] for row in db.execute(_NEW_IDS, (len(unique),)))
            started = [threading.Event() for _ in slices]

            def write(number: int) -> int:
                part = slices[number]
                try:
                    with self._pool.connection(timeout=self.write_wait) as conn:
                        conn.execute(_WRITER_LOCK)
                        if number and not started[number - 1].wait(self.write_wait):
                            raise HistoryError(f"part {number} of a batch waited past "
                                               f"{self.write_wait:g} s for the one before")
                        conn.execute("SELECT pg_current_xact_id()")
                        started[number].set()
                        offset = number * size
                        row = conn.execute(_ADD_PART, (ids[offset:offset + len(part)],
                                                       *_columns(part), *links[number])
                                           ).fetchone()
                    return int(row[0]) if row else 0
                except PoolTimeout as exc:
                    raise HistoryError(f"no connection to the history database "
                                       f"{self.where}: {exc}") from None
                finally:
                    started[number].set()  # a failed part does not hold the next back

            others = [self._parts_pool().submit(write, n) for n in range(1, len(slices))]
            results: list[int | BaseException] = []
            for job in (None, *others):
                try:
                    results.append(write(0) if job is None else job.result())
                except BaseException as exc:  # every part ends before one raises
                    results.append(exc)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(r for r in results if isinstance(r, int))

    def _parts_pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=max(1, self.write_parts - 1),
                                                thread_name_prefix="history-part")
        return self._executor

    # -- reads -------------------------------------------------------------------------------
    def _timed(self, work: Callable[[Conn], T]) -> T:
        """``work(conn)`` in a read-only snapshot, cut off after ``query_timeout``."""
        try:
            with self._pool.connection() as conn:
                conn.execute(self._read_setup)  # one round trip for both
                return work(conn)
        except psycopg.errors.QueryCanceled:
            raise QueryTimeout(f"the query ran past history.query_timeout "
                               f"({self.query_timeout:g} s)") from None
        except PoolTimeout:
            raise QueryTimeout(f"every history connection (history.pool_size) stayed busy "
                               f"for history.query_timeout ({self.query_timeout:g} s)") \
                from None
        except psycopg.OperationalError as exc:
            raise HistoryError(f"the history database {self.where}: "
                               f"{str(exc).strip()}") from None

    def search(self, query: Query) -> Page:
        """One page and its total (module docstring: capped at ``count_limit``, counted
        under ``count_budget_ms``); a single user or package drives from its link table,
        whose key is (name, time, message), as on SQLite; an exclusion with ``contains``
        is asked as what it keeps (:func:`_kept`)."""
        source, _, _, stamp, row = _source(query)  # the rest: per snapshot (_kept)
        order = "DESC" if query.order == "desc" else "ASC"
        paging, page_params = _after(query, stamp, row)
        size = query.rows_per_page
        offset = 0 if query.cursor is not None else (query.page - 1) * size

        probing = bool(query.contains) and source == "messages m"

        def work(db: Conn) -> Page:
            probed = _probe(db, query, order, paging, page_params, size, offset) \
                if probing else None
            rows, dense = probed if probed is not None else (None, False)
            asked: Query | None = query  # what the page (and its count) is read with
            if rows is None:  # rare in the newest rows: through the index's intersection
                asked = _kept(db, query)
                if asked is None:  # every topic (or category) stored is excluded
                    return page_of([], query, offset, False, self.count_limit,
                                   lambda: (0, False))
                if probing:
                    db.execute(_BITMAP_ONLY)
                _, kept_where, kept_params, _, _ = _source(asked)
                rows = db.execute(
                    f"SELECT m.id, m.msg_id, m.timestamp, m.envelope FROM {source}"  # noqa: S608
                    f" WHERE {kept_where}{paging} ORDER BY {stamp} {order}, {row} {order}"
                    " LIMIT %s OFFSET %s",
                    (*kept_params, *page_params, size + 1, offset)).fetchall()
            more = len(rows) > size
            del rows[size:]
            counted_query = asked

            def count() -> tuple[int, bool] | None:
                if dense:  # the ILIKE alone, its statistics' estimate: read in order
                    where_all, all_params = _where(counted_query, "body")
                    sql = ("SELECT COUNT(*) FROM (SELECT 1 FROM messages m"  # noqa: S608
                           f" WHERE {where_all} LIMIT %s) c")
                elif probing:  # _contains' docstring: the words alone estimated
                    words_only, all_params = _where(counted_query, "words")
                    text, text_params = _contains(counted_query.contains, "body")
                    sql = ("SELECT COUNT(*) FROM (SELECT 1 FROM (SELECT m.body FROM"  # noqa: S608
                           f" messages m WHERE {words_only} OFFSET 0) m WHERE {text}"
                           " LIMIT %s) c")
                    all_params += text_params
                else:
                    counted, where_all, all_params, _, _ = _source(counted_query, count=True)
                    sql = (f"SELECT COUNT(*) FROM (SELECT 1 FROM {counted}"  # noqa: S608
                           f" WHERE {where_all} LIMIT %s) c")
                total = self._count(db, sql, (*all_params, self.count_limit + 1))
                return None if total is None else \
                    (min(total, self.count_limit), total > self.count_limit)

            return page_of(_with_names(db, rows), query, offset, more, self.count_limit, count)

        return self._timed(work)

    def _count(self, db: Conn, sql: str, params: tuple[Any, ...]) -> int | None:
        """``sql``'s count, or None when it ran past ``count_budget_ms``: in a savepoint
        (set with the budget in one round trip), so the snapshot stays usable and the
        budget ends with it."""
        db.execute(self._count_setup)
        try:
            return int(_one(db, sql, params))
        except psycopg.errors.QueryCanceled:
            db.execute("ROLLBACK TO SAVEPOINT count")
            return None

    def get(self, msg_id: str) -> Stored | None:
        def work(db: Conn) -> Stored | None:
            rows = db.execute("SELECT id, msg_id, timestamp, envelope FROM messages"
                              " WHERE msg_id = %s", (msg_id,)).fetchall()
            found = _with_names(db, rows)
            return found[0] if found else None

        return self._timed(work)

    def count(self) -> int:
        return self._timed(lambda db: _one(db, "SELECT COUNT(*) FROM messages", ()))

    def since(self, after: Position, limit: int) -> list[tuple[Position, Stored]]:
        """Rows after ``after`` in (xid, id) order, only those below ``_HORIZON`` (every
        writer of messages below it has ended: ``006_feed_order.sql``); one index range.
        A transaction writing messages left open holds the feed back (never skips) until
        it ends; others on the server do not."""
        def work(db: Conn) -> list[tuple[Position, Stored]]:
            rows = db.execute(_FEED, (str(after.xid), after.id, limit)).fetchall()
            stored = _with_names(db, [row[:4] for row in rows])
            return [(Position(int(row[4]), row[0]), one) for row, one in zip(rows, stored,
                                                                            strict=True)]

        return self._timed(work)

    def activity(self, start: float, end: float, bucket: int) -> dict[str, list[int]]:
        if bucket <= 0 or bucket % HOUR:
            raise ValueError(f"bucket must be a positive multiple of 3600, not {bucket}")
        first = math.floor(start / HOUR)
        size = bucket // HOUR
        slots = max(0, math.ceil((end - first * HOUR) / bucket))

        def work(db: Conn) -> dict[str, list[int]]:
            out: dict[str, list[int]] = {}
            for hour, category, count in db.execute(
                    "SELECT hour, category, count FROM activity_hourly"
                    " WHERE hour >= %s AND hour < %s AND count > 0",
                    (first, math.ceil(end / HOUR))):
                out.setdefault(category, [0] * slots)[(hour - first) // size] += count
            return out

        return self._timed(work)

    def name_activity(self, kind: str, name: str, start: float, end: float,
                      bucket: int) -> dict[str, list[int]]:
        slots = max(0, math.ceil((end - start) / bucket))
        table = _KINDS[kind][0]

        def work(db: Conn) -> dict[str, list[int]]:
            out: dict[str, list[int]] = {}
            name_id = _one(db, f"SELECT id FROM {table} WHERE name = %s", (name,))  # noqa: S608
            if name_id is None:
                return out
            # the id as a value, planned each time (prepare=False: psycopg would prepare
            # a statement run 5 times, and PostgreSQL then keeps a generic plan): the
            # planner sees the name's own frequency, so a busy name's ~25,000 links are
            # counted in a hash table, not sorted first (the sub-select's id was
            # planned as an average name: 12 ms the busiest user's month, 7 ms so)
            for slot, category, count in db.execute(name_activity_sql(kind),
                                                    (start, bucket, name_id, start, end),
                                                    prepare=False):
                if 0 <= slot < slots:
                    out.setdefault(category, [0] * slots)[slot] += count
            return out

        return self._timed(work)

    def last_position(self) -> Position:
        row = self._timed(lambda db: db.execute(_HEAD).fetchone())
        return Position(int(row[0]), row[1]) if row else Position(0, 0)

    def position_of(self, message_id: int) -> Position | None:
        xid = self._timed(lambda db: db.execute("SELECT xid::text FROM messages WHERE id = %s",
                                                (message_id,)).fetchone())
        return Position(int(xid[0]), message_id) if xid else None

    def recent(self, query: Query) -> list[Stored]:
        where, params = _where(query)
        order = "DESC" if query.order == "desc" else "ASC"
        paging, page_params = _after(query)
        return self._timed(lambda db: _with_names(db, db.execute(
            f"SELECT m.id, m.msg_id, m.timestamp, m.envelope FROM messages m"  # noqa: S608
            f" WHERE {where}{paging} ORDER BY m.timestamp {order}, m.id {order} LIMIT %s",
            (*params, *page_params, query.rows_per_page)).fetchall()))

    def topic_counts(self, start: float, end: float) -> dict[str, int]:
        check_range(start, end)
        parts, params = topic_count_parts(start, end, "%s")
        if not parts:
            return {}
        query = (f"SELECT topic, SUM(n)::bigint AS total FROM ({' UNION ALL '.join(parts)}) x"  # noqa: S608
                 ' GROUP BY topic ORDER BY total DESC, topic COLLATE "C" LIMIT %s')
        return self._timed(lambda db: dict(db.execute(query, (*params, MAX_TOPICS)).fetchall()))

    def top_names(self, kind: str, start: float, end: float, limit: int) -> list[tuple[str, int]]:
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}, not {kind!r}")
        if not 1 <= limit <= MAX_TOP:
            raise ValueError(f"limit must be 1..{MAX_TOP}, not {limit}")
        check_range(start, end)
        names, link, key = _KINDS[kind]
        rollup = f"stats_{names[:-1]}_days"
        parts, params = name_count_parts(start, end, rollup, key, link, "%s")
        if not parts:
            return []
        query = (f"SELECT t.name, SUM(x.n)::bigint AS total FROM ({' UNION ALL '.join(parts)}) x"  # noqa: S608
                 f" JOIN {names} t ON t.id = x.name_id GROUP BY t.id, t.name"
                 ' ORDER BY total DESC, t.name COLLATE "C" LIMIT %s')
        return self._timed(lambda db: [(name, total) for name, total in db.execute(
            query, (*params, limit))])

    def msg_ids(self) -> list[str]:
        """Every stored msg_id in insertion order (tests, checks)."""
        return self._timed(lambda db: [r[0] for r in db.execute(
            "SELECT msg_id FROM messages ORDER BY id")])

    def close(self) -> None:
        with self._cleaner_lock:
            if self._cleaner is not None:
                self._cleaner.stop()
        if self._executor is not None:
            self._executor.shutdown()
        self._pool.close()


def name_activity_sql(kind: str) -> str:
    """:meth:`PostgresHistory.name_activity`'s statement (parameters: start, bucket, the
    name's id, start, end). The category is the link's own copy of its message's
    (``009_link_category.sql``): one key range of small link rows, no message row read
    per link (40-60 ms a frequent user's month at 1,000,000 messages, 7-14 ms so)."""
    _, link, key = _KINDS[kind]
    return ("SELECT floor((l.timestamp - %s) / %s)::bigint, l.category, COUNT(*)"  # noqa: S608
            f" FROM {link} l WHERE l.{key} = %s"
            " AND l.timestamp >= %s AND l.timestamp < %s GROUP BY 1, 2")


def _columns(records: list[Record]) -> tuple[list[Any], ...]:
    """The message columns of :data:`_ADD_BATCH`. Times as floats: a binary array takes
    one Python type (an int among floats would fail the batch)."""
    return ([r.msg_id for r in records], [r.topic for r in records],
            [r.category for r in records], [float(r.timestamp) for r in records],
            [r.publisher for r in records], [r.seq_id for r in records],
            [r.envelope for r in records], [r.text for r in records])


def _one(db: Conn, sql: Any, params: Any) -> Any:
    row = db.execute(sql, params).fetchone()
    return row[0] if row else None


#: For the rest of a read transaction: rows found through an index's bitmap, not by
#: reading a time-ordered index (or the table) and filtering. Why: the planner cannot
#: know that a frequent term is rare with a topic (it multiplies their frequencies), so
#: it walks the topic's (or every) row newest first looking for a page, 1,000,000 rows
#: for an empty answer; :func:`_probe` has just seen that the term is rare there.
_BITMAP_ONLY = b"SET LOCAL enable_indexscan = off; SET LOCAL enable_seqscan = off"


#: Most topics (categories) a ``not_topic`` (``not_category``) with ``contains`` becomes
#: (:func:`_kept`): past it the exclusion stays a filter of the index's matches.
MAX_KEPT = 64
#: The distinct values of an indexed column of ``messages`` in the read's snapshot, one
#: descent of its btree (``messages_topic``, ``messages_category``) per value, at most
#: ``%s`` of them (the recursion is read lazily: it stops there).
_STORED_VALUES = {column: (
    "WITH RECURSIVE v(value) AS ("  # noqa: S608 (constants)
    f"(SELECT {column} FROM messages ORDER BY {column} LIMIT 1) UNION ALL"
    f" SELECT (SELECT m.{column} FROM messages m WHERE m.{column} > v.value"
    f" ORDER BY m.{column} LIMIT 1) FROM v WHERE v.value IS NOT NULL)"
    " SELECT value FROM v WHERE value IS NOT NULL LIMIT %s") for column in ("topic", "category")}


def _kept(db: Conn, query: Query) -> Query | None:
    """``query`` with ``contains`` and ``not_topic`` / ``not_category`` asked as the
    topics (categories) that are kept: those it names, else those stored (read in its
    own snapshot, so the same rows match), less the excluded ones; None when none is
    left (the answer is empty). Unchanged without ``contains``, and when more than
    :data:`MAX_KEPT` would be kept.

    Why: a topic or category is a key of the text's GIN index (011), an exclusion is
    not (GIN has no "not equal"), so "debian.org but not dak, wanna-build or debbugs"
    read every row holding debian.org's words to drop them: at 1,000,000 stored 760,000
    rows and 4.2-6.4 s for an empty answer (past ``query_timeout``'s 5 s default);
    asked as "debian.org in git", one intersection of the index."""
    if not query.contains:
        return query
    changes: dict[str, tuple[str, ...]] = {}
    for column, field in (("topic", "topics"), ("category", "categories")):
        named, excluded = getattr(query, field), getattr(query, f"not_{field}")
        if not excluded:
            continue
        if not named:
            bound = MAX_KEPT + len(excluded)
            named = tuple(row[0] for row in db.execute(_STORED_VALUES[column], (bound + 1,)))
            if len(named) > bound:
                continue
        left = tuple(value for value in named if value not in excluded)
        if not left:
            return None
        if len(left) <= MAX_KEPT:
            changes.update({field: left, f"not_{field}": ()})
    return dataclasses.replace(query, **changes) if changes else query


def _probe(db: Conn, query: Query, order: str, paging: str, page_params: list[Any],
           size: int, offset: int) -> tuple[list[tuple[Any, ...]], bool] | None:
    """The page of a ``contains`` when the term fills it within the :data:`PROBE_ROWS`
    newest rows (in the page's order) of the rest of the query, a topic's say (the
    planner estimates that part well: no text in it), else None. Why: a term frequent
    there is found at once in time order, where the index's intersection would sort
    every match (500,000 for debian.org with wanna-build); a term rare there (none with
    git) is what the intersection answers in milliseconds (:data:`_BITMAP_ONLY`), where
    the time order read 1,000,000 rows to prove there was nothing. With the page,
    whether the term is :data:`DENSE` there (its count then reads rows in order)."""
    rest, params = _where(dataclasses.replace(query, contains=()))
    text, text_params = _contains(query.contains, "body")
    rows = db.execute(
        "SELECT m.id, m.msg_id, m.timestamp, m.envelope, m.n FROM (SELECT m.id, m.msg_id,"  # noqa: S608
        f" m.timestamp, m.envelope, m.body, row_number() OVER (ORDER BY m.timestamp {order},"
        f" m.id {order}) AS n FROM messages m WHERE {rest}{paging}"
        f" ORDER BY m.timestamp {order}, m.id {order} LIMIT %s) m WHERE {text}"
        f" ORDER BY m.timestamp {order}, m.id {order} LIMIT %s OFFSET %s",
        (*params, *page_params, PROBE_ROWS, *text_params, size + 1, offset)).fetchall()
    if len(rows) <= size:
        return None
    return [row[:4] for row in rows], (offset + size + 1) / rows[-1][4] >= DENSE


def words(text: str) -> str:
    """``history_words(text)`` of ``011_contains_facets.sql``, for a pattern."""
    return text.translate(_WORDS)


def _contains(terms: tuple[str, ...], text: str = "both") -> tuple[str, list[Any]]:
    """``contains``' clause, ``text`` "both": each term's words (what the index serves,
    punctuation kept: ``011_contains_facets.sql``) and its ILIKE, which decides;
    "words" or "body": one of them. Why apart: the planner multiplies the two
    frequencies (it cannot know one implies the other), so with both a frequent term
    looks rare and is counted through a bitmap of all its matches (debian.org: 760,000)
    instead of read until ``count_limit``; its count estimates the words alone."""
    params: list[Any] = []
    for term in terms:
        pattern = like_pattern(term)
        params += [words(pattern), pattern] if text == "both" \
            else [words(pattern) if text == "words" else pattern]
    one = {"both": "history_words(m.body) ILIKE %s AND m.body ILIKE %s",
           "words": "history_words(m.body) ILIKE %s", "body": "m.body ILIKE %s"}[text]
    return "(" + " OR ".join(one for _ in terms) + ")", params


def like_pattern(term: str) -> str:
    """``%term%`` with LIKE's own characters taken literally (backslash is the escape)."""
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _where(query: Query, text: str = "both") -> tuple[str, list[Any]]:
    """The WHERE clause of ``query`` (datagrepper's: OR within a kind, AND across kinds,
    ``not_*`` excludes any of its values) — SqliteHistory's, in PostgreSQL's terms;
    ``text``: :func:`_contains`'."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.start is not None:
        clauses.append("m.timestamp >= %s")
        params.append(query.start)
    if query.end is not None:
        clauses.append("m.timestamp <= %s")
        params.append(query.end)
    for column, values, negate in (("topic", query.topics, False),
                                   ("category", query.categories, False),
                                   ("topic", query.not_topics, True),
                                   ("category", query.not_categories, True)):
        if len(values) == 1 and not negate:  # one value: its index read in time order
            clauses.append(f"m.{column} = %s")
            params.append(values[0])
        elif values:
            clauses.append(f"m.{column} <> ALL(%s)" if negate else f"m.{column} = ANY(%s)")
            params.append(list(values))
    for kind, values, negate in (("users", query.users, False),
                                 ("packages", query.packages, False),
                                 ("users", query.not_users, True),
                                 ("packages", query.not_packages, True)):
        if values:
            table, link, key = _KINDS[kind]
            if negate:
                clauses.append(f"NOT EXISTS (SELECT 1 FROM {link} l JOIN {table} t"  # noqa: S608
                               f" ON t.id = l.{key} WHERE l.message_id = m.id"
                               " AND t.name = ANY(%s))")
            else:
                clauses.append(f"m.id IN (SELECT l.message_id FROM {link} l JOIN {table} t"  # noqa: S608
                               f" ON t.id = l.{key} WHERE t.name = ANY(%s))")
            params.append(list(values))
    if query.contains:
        clause, text_params = _contains(query.contains, text)
        clauses.append(clause)
        params += text_params
    return (" AND ".join(clauses) or "TRUE"), params


def _source(query: Query, count: bool = False) -> tuple[str, str, list[Any], str, str]:
    """FROM, WHERE, parameters and the (time, id) columns to order by: a single user or
    package reads its link table in key order (no sort of every row it has). ``count``:
    for the count, which reads the link alone when nothing else is asked of a message
    (a frequent name's month joined to its messages read 10,000 heap rows: 90-130 ms
    at 1,000,000, past the count's budget when cold)."""
    kind = "users" if len(query.users) == 1 else "packages" if len(query.packages) == 1 \
        else None
    if kind is None:
        where, params = _where(query)
        return "messages m", where, params, "m.timestamp", "m.id"
    table, link, key = _KINDS[kind]
    name = query.users[0] if kind == "users" else query.packages[0]
    # the time bounds only on the link's copy of the time (below), not the message's too
    where, params = _where(dataclasses.replace(query, start=None, end=None, **{kind: ()}))
    bounds: list[str] = []
    if query.start is not None:  # again on the link's own copy of the time (its key)
        bounds.append(" AND d.timestamp >= %s")
    if query.end is not None:
        bounds.append(" AND d.timestamp <= %s")
    times = [t for t in (query.start, query.end) if t is not None]
    alone = count and where == "TRUE"
    return (f"{link} d" if alone else f"{link} d JOIN messages m ON m.id = d.message_id",
            f"d.{key} = (SELECT id FROM {table} WHERE name = %s){''.join(bounds)}"  # noqa: S608
            f" AND {where}", [name, *times, *params], "d.timestamp", "d.message_id")


def _after(query: Query, stamp: str = "m.timestamp",
           row: str = "m.id") -> tuple[str, list[Any]]:
    """The condition for rows after ``query.cursor`` (timestamp, id) in its order."""
    if query.cursor is None:
        return "", []
    op = "<" if query.order == "desc" else ">"
    return f" AND ({stamp}, {row}) {op} (%s, %s)", list(query.cursor)


def _with_names(db: Conn, rows: list[tuple[Any, ...]]) -> list[Stored]:
    if not rows:
        return []
    ids = [r[0] for r in rows]
    names: dict[tuple[str, int], list[str]] = {}
    for kind, (table, link, key) in _KINDS.items():
        for message_id, name in db.execute(
                f"SELECT l.message_id, t.name FROM {link} l JOIN {table} t"  # noqa: S608
                f" ON t.id = l.{key} WHERE l.message_id = ANY(%s)", (ids,)):
            names.setdefault((kind, message_id), []).append(name)
    return [Stored(row_id, msg_id, stamp, envelope,
                   tuple(sorted(names.get(("users", row_id), []))),
                   tuple(sorted(names.get(("packages", row_id), []))))
            for row_id, msg_id, stamp, envelope in rows]
