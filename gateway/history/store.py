"""Where the history is kept: the :class:`HistoryStore` interface and its SQLite form.

The recorder writes through :meth:`HistoryStore.add` on a connection it is given, so a
message commits in the same transaction as the consumer's position (SQLite: the
position table lives in the history file itself). The web API reads through
:meth:`~HistoryStore.search`, :meth:`~HistoryStore.get` and :meth:`~HistoryStore.count`,
which speak :class:`~gateway.history.query.Query` and :class:`Page`, not SQL, so a
PostgreSQL store (full-text index, no TimescaleDB) can stand behind the same calls.

Every read runs under a time limit (``history.query_timeout``): a query that would
take longer is cut off with :class:`QueryTimeout` instead of holding a worker, the
fault datagrepper's users complain of most.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gateway.history import indexfile, migrate, textindex
from gateway.history.msgids import MsgIds
from gateway.history.query import Query
from gateway.history.records import Record

log = logging.getLogger(__name__)


class HistoryError(Exception):
    """The history database cannot be opened or written."""


class QueryTimeout(HistoryError):
    """A read ran past its time limit and was cut off."""


@dataclass(frozen=True)
class Stored:
    """One stored message as the API gives it back."""

    id: int
    msg_id: str
    timestamp: float
    envelope: str
    users: tuple[str, ...]
    packages: tuple[str, ...]


@dataclass(frozen=True, order=True)
class Position:
    """A place in the live feed (:meth:`HistoryStore.since`), ordered as rows commit.

    SQLite: ``(0, id)``: one writer at a time, and a rowid is taken inside the write lock
    as max(rowid) + 1, so a transaction's rows all sort after every row committed before
    it began writing and before every row of the next one: id order is commit order.
    PostgreSQL: ``(xid, id)``, the writing transaction's id first (``006_feed_order.sql``).
    Sent to browsers as an opaque SSE event id (:meth:`token`)."""

    xid: int
    id: int

    def token(self) -> str:
        """``"id"`` (SQLite, so ids sent before positions still resume) or ``"xid-id"``."""
        return f"{self.xid}-{self.id}" if self.xid else str(self.id)

    @staticmethod
    def parse(text: str) -> Position | int:
        """A :meth:`token` (``"0"``, the start, included), or a plain message id (an
        ``int``: its position is looked up); ValueError for anything else."""
        xid, dash, rest = text.partition("-")
        parts = (xid, rest) if dash else ("0", xid)
        if not all(p.isascii() and p.isdigit() and len(p) <= 20 for p in parts):
            raise ValueError(f"not a stream position: {text[:40]!r}")
        position = Position(int(parts[0]), int(parts[1]))
        if position.xid >= 2**64 or position.id >= 2**63:
            raise ValueError(f"not a stream position: {text[:40]!r}")
        return position if dash or not position.id else position.id  # "0": the start


@dataclass(frozen=True)
class Page:
    rows: list[Stored]
    #: Messages matching the query in all (every page), or at least this many when
    #: ``capped`` (counting stopped at the store's ``count_limit``).
    total: int
    capped: bool = False
    #: Whether a row follows this page, when the store read one more to know (else None:
    #: the web guesses from ``total``).
    more: bool | None = None


class HistoryStore(abc.ABC):
    """The history, whatever keeps it."""

    #: Where it is, for messages (a path, or host:port/dbname: never a password).
    where: str = ""
    #: The file a recorder's position commits in together with the rows it writes
    #: (SQLite: the history itself). ``None``: the store cannot share a transaction
    #: with a local file, so the recorder commits rows first and its position after
    #: (:mod:`gateway.history.pgstore` says why that neither loses nor doubles).
    position_path: Path | None = None

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A write transaction of the store's own, committed on a normal exit; yields
        the ``db`` that :meth:`add` takes."""

    @abc.abstractmethod
    def add(self, db: Any, record: Record) -> bool:
        """Store ``record`` in the caller's open transaction on ``db``; ``False`` when its
        msg_id is already stored (nothing written)."""

    @abc.abstractmethod
    def add_many(self, records: Iterable[Record]) -> int:
        """Store records in transactions of its own (backfill); how many were new."""

    @abc.abstractmethod
    def search(self, query: Query) -> Page: ...

    @abc.abstractmethod
    def get(self, msg_id: str) -> Stored | None: ...

    @abc.abstractmethod
    def topic_counts(self, start: float, end: float) -> dict[str, int]:
        """Messages per topic in [start, end) (at most :data:`MAX_TOPICS` topics, the
        busiest); a range longer than :data:`MAX_STATS_DAYS` is a ValueError."""

    @abc.abstractmethod
    def top_names(self, kind: str, start: float, end: float, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` (1..:data:`MAX_TOP`) names of ``kind`` (``users`` or ``packages``)
        with the most messages in [start, end), count descending then name."""

    @abc.abstractmethod
    def count(self) -> int: ...

    def index_lag(self) -> int:
        """Messages stored but not yet found by ``contains``, ``user`` or ``package``
        (0: indexes written in the same transaction as the message, PostgreSQL's)."""
        return 0

    def committed(self) -> None:
        """A caller committed messages on a connection of its own (SQLite's index file
        follows; PostgreSQL's indexes are in the same transaction)."""
        return None

    def start_indexer(self) -> None:
        """Index behind the writes, in a thread, until :meth:`stop_indexer` (SQLite's
        index file; PostgreSQL has nothing to do)."""
        return None

    def stop_indexer(self) -> None:
        return None

    @abc.abstractmethod
    def since(self, after: Position, limit: int) -> list[tuple[Position, Stored]]:
        """The live stream's feed: at most ``limit`` rows after ``after``, each with its
        position, in commit order. Exact: a row this does not hand out yet is one whose
        position will be after the last one it did (nothing committing late is skipped)."""

    @abc.abstractmethod
    def activity(self, start: float, end: float, bucket: int) -> dict[str, list[int]]:
        """Messages per category per ``bucket`` seconds (a multiple of 3600) in
        [``start``, ``end``), ``start`` taken down to its hour; a category with no message
        in the range is left out. Read from an hourly rollup, never the messages."""

    @abc.abstractmethod
    def last_position(self) -> Position:
        """Where a new live stream starts: every row :meth:`since` could hand out now is
        at or before it, every later one after it (``Position(0, 0)`` when empty)."""

    def position_of(self, message_id: int) -> Position | None:
        """The position of the row with id ``message_id`` (a stream resumed with a plain
        id, as sent before positions); ``None`` when no such row is stored."""
        return Position(0, message_id)

    def name_activity(self, kind: str, name: str, start: float, end: float,
                      bucket: int) -> dict[str, list[int]]:
        """Messages of one user or package (``kind`` "users" or "packages") per category
        per ``bucket`` seconds in [``start``, ``end``): the chart of ``/package/NAME``.
        This default counts each bucket with :meth:`search` (one series, "messages");
        a store overrides it with one grouped query."""
        from gateway.history.query import Query

        slots = max(0, math.ceil((end - start) / bucket))
        counts = [self.search(Query(**{kind: (name,)}, start=start + i * bucket,
                                    end=min(end, start + (i + 1) * bucket) - 0.001,
                                    rows_per_page=1)).total for i in range(slots)]
        return {"messages": counts} if any(counts) else {}

    def recent(self, query: Query) -> list[Stored]:
        """The first page of ``query`` without its total (the dashboard's list: a count
        of every match would cost a scan at a million messages). Default: :meth:`search`."""
        return self.search(query).rows

    @abc.abstractmethod
    def close(self) -> None: ...


#: Records per transaction of :meth:`SqliteHistory.add_many`.
BATCH = 1000
#: Pages (4 KiB) the write-ahead log reaches before the writer's commit checkpoints it:
#: the log's bound on disk (about 160 MB, with a reader holding no old snapshot). At a
#: million messages a batch of 1,000 dirties ~2,600 pages, most of them the same link,
#: topic and text pages as the batches before; a checkpoint copies each page once,
#: however many batches rewrote it, so a longer log copies fewer: 40,000 pages against
#: 10,000, ingest x1.09-1.16 wall (the final checkpoint counted), the same CPU
#: (bench/history_ablation.py variant w40k). SQLite's default is 1,000.
WAL_CHECKPOINT_PAGES = 40_000
#: Seconds a writer waits for another's write lock (a batch commits in well under one).
BUSY_TIMEOUT = 30.0
#: SQLite virtual-machine steps between two checks of a read's deadline.
PROGRESS_STEPS = 10000
#: User/package name ids remembered by the writer (per kind; cleared when full).
NAME_CACHE = 50_000
#: ``total`` is exact up to this many matches (``history.count_limit``).
COUNT_LIMIT = 10_000
#: ``history.count_budget_ms``'s default: milliseconds a ``/raw`` count may run before
#: ``total`` is the lower bound it has reached (``total_capped``), as on PostgreSQL. Why
#: SQLite needs it too: a count of a frequent user joined to another filter (topic)
#: reads every one of the name's links and their messages' rows until ``count_limit``
#: match: 116,000 links, 1.3 s at a million stored, where the page itself takes ms.
COUNT_BUDGET_MS = 150
#: ``contains`` newest-first: matches read from the text index (newest ids first) per
#: needed row before the answer is checked against the time order (else the full plan).
CONTAINS_READ_FACTOR = 4
#: ``contains`` with another filter: the most text matches one step of the read in id
#: order takes (:class:`_TextScan`; ~0.4-1 us a match at 1,000,000, by the term).
CONTAINS_STEP_MOST = 65_536
#: Entries of the walked index (a name's links, a topic's or category's index) its
#: first step reads (its density), the fewest a later step reads (what should hold the
#: page by the term's density), and the most a step grows to (doubling).
WALK_PROBE = 256
WALK_FIRST = 32
WALK_MOST = 8192
#: A look-up of one id in the text index, in matches read in id order: ~350 us against
#: ~0.4 us for amd64, ~1.2 ms against ~1 us for debian.org at 1,000,000 messages (26
#: segments, a look-up per trigram per segment). A walk's step reads the term's matches
#: over its ids' span when fewer are expected.
TEXT_LOOKUP_COST = 1000
#: A single user or package with a single topic (category): entries of the name's links
#: and of the topic's index read, newest first, to see which of the two is the sparser
#: and drives the page and its count (:func:`_index_first`).
SPARSER_PROBE = 200
#: A combined ``contains`` count (the term's matches, each looked up): ~1-1.5 us a match
#: read at 1,000,000 messages (a message's row to check: ~2). One estimated to run
#: COUNT_SKIP_FACTOR times ``count_budget_ms`` or more is not started
#: (:meth:`SqliteHistory._beyond_budget`).
COUNT_MATCH_SECONDS = 1e-6
COUNT_SKIP_FACTOR = 3

_INSERT_MESSAGE = ("INSERT INTO messages (msg_id, topic, category, timestamp, publisher,"
                   " seq_id, envelope) VALUES (?, ?, ?, ?, ?, ?, ?)"
                   " ON CONFLICT DO NOTHING")  # a repeat in the newest run (msgids.py)
#: The text folded, against which the text index's candidates are checked (textindex.py);
#: REPLACE: a message deleted by hand leaves its text, and its id may be taken again.
_INSERT_FOLD = "INSERT OR REPLACE INTO messages_fold (id, text) VALUES (?, ?)"
_FIND_NAME = {t: f"SELECT id FROM {t} WHERE name = ?" for t in ("users", "packages")}  # noqa: S608
_NEW_NAME = {t: f"INSERT INTO {t} (name) VALUES (?)"  # noqa: S608
             for t in ("users", "packages")}
#: A message's users and packages, from which the index file's links are made
#: (indexfile.py); kinds 0 and 1.
_INSERT_NAME = ("INSERT OR IGNORE INTO message_names (message_id, kind, name_id, timestamp)"
                " VALUES (?, ?, ?, ?)")
_KIND = {"users": 0, "packages": 1}

#: The rollups a batch adds to (:meth:`SqliteHistory.flush`), as its triggers would.
_ROLLUP = {
    "activity_hourly": "INSERT INTO activity_hourly (hour, category, count) VALUES (?, ?, ?)"
                       " ON CONFLICT (hour, category) DO UPDATE SET count = count + excluded.count",
    "stats_topic_days": "INSERT INTO stats_topic_days (day, topic, messages) VALUES (?, ?, ?)"
                        " ON CONFLICT (day, topic)"
                        " DO UPDATE SET messages = messages + excluded.messages"}
#: Timestamps (seconds, either side of the epoch) whose rollup keys a batch computes in
#: Python: far past any real message, well inside SQLite's 64-bit integer cast.
ROLLUP_STAMP_LIMIT = 1e15


#: The insert triggers keeping the rollups (002_activity, 003_stats as 004 left them):
#: a batch of :data:`TRIGGERS_ASIDE_MIN` or more drops them and creates them again from
#: their own text before its transaction commits. Why not only the ``rollups_deferred``
#: row their WHEN clause tests (004): a trigger that stands aside still runs per row,
#: half the cost of inserting a message and its links at 200,000 messages
#: (bench/history_at_scale.py). DDL is transactional in SQLite: nobody else ever sees
#: the tables without them, and a rolled-back batch (savepoint or transaction) has them
#: back.
BATCH_TRIGGERS = ("messages_activity_add", "stats_topic_days_insert")
#: Smallest batch that sets the triggers aside. Such a batch commits a new schema
#: version, and a reader connection's next query reads the schema again (+1-8 ms
#: measured, FTS5 connecting again); a batch this big saves the writer more than that
#: (~20 us a message), while the small batches of a live bus (under 5,000 messages/s at
#: the default ``history.batch_ms``) leave the schema, and the readers, alone.
TRIGGERS_ASIDE_MIN = 500
_TRIGGER_SQL = (f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"  # noqa: S608
                f" AND name IN ({','.join(repr(t) for t in BATCH_TRIGGERS)})")


def _set_triggers_aside(db: sqlite3.Connection) -> list[str]:
    """Drop :data:`BATCH_TRIGGERS` in ``db``'s open transaction; the statements that
    create them again (read from the schema each batch: whatever version it holds)."""
    found = db.execute(_TRIGGER_SQL).fetchall()
    for name, _ in found:
        db.execute(f'DROP TRIGGER "{name}"')
    return [sql for _, sql in found]


def _sql_day(stamp: float) -> int:
    """The day of ``stamp`` as ``003_stats.sql``'s triggers compute it (floor), with the
    same operations, so a batch's keys are the triggers' keys to the bit."""
    day = int(stamp / 86400.0)
    return day - (stamp < day * 86400)

#: Seconds in a UTC day: the stats rollups' unit (``003_stats.sql``).
DAY = 86400
#: Longest range :meth:`HistoryStore.topic_counts` and :meth:`~HistoryStore.top_names` take:
#: a weekly overview reads two weeks, a year's is the most anyone asks.
MAX_STATS_DAYS = 400
#: Most names :meth:`HistoryStore.top_names` gives.
MAX_TOP = 1000
#: Most topics :meth:`HistoryStore.topic_counts` gives (a publisher inventing topics
#: cannot make the answer grow without bound; the busiest are kept).
MAX_TOPICS = 10000
#: Most categories (services) :meth:`SqliteHistory.name_activity` looks each message's
#: up in the category index by; a history with more (a publisher inventing services:
#: a look-up per category per message) reads each message's row instead.
CHART_CATEGORIES = 32
#: The stored categories, the first ``?`` of them: one seek each in the category index.
_CATEGORIES = ("WITH RECURSIVE c (category) AS (SELECT MIN(category) FROM messages"
               " UNION ALL SELECT (SELECT MIN(category) FROM messages WHERE category > c.category)"
               " FROM c WHERE c.category IS NOT NULL LIMIT ?)"
               " SELECT category FROM c WHERE category IS NOT NULL")
#: ``top_names`` kind -> (rollup table, its key column, names table, link table).
_NAME_KINDS = {"users": ("stats_user_days", "user_id", "users", "user_messages"),
               "packages": ("stats_package_days", "package_id", "packages",
                            "package_messages")}


def utc_day(timestamp: float) -> int:
    """The UTC day (since the epoch) of ``timestamp``, as ``003_stats.sql`` computes it."""
    return math.floor(timestamp / DAY)


def check_range(start: float, end: float) -> None:
    """A stats range must be finite, ordered and at most :data:`MAX_STATS_DAYS` long."""
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise ValueError(f"not a time range: [{start}, {end})")
    if end - start > MAX_STATS_DAYS * DAY:
        raise ValueError(f"a stats range is at most {MAX_STATS_DAYS} days")


def day_split(start: float, end: float) -> tuple[int, int, list[tuple[float, float]]]:
    """[start, end) as whole UTC days [first, last) read from the rollups, plus the
    ranges at its edges (part days) read from the messages themselves."""
    first, last = math.ceil(start / DAY), math.floor(end / DAY)
    if first >= last:
        return 0, 0, [(start, end)] if start < end else []
    edges = [(a, b) for a, b in ((start, first * DAY), (last * DAY, end)) if a < b]
    return first, last, edges


def topic_count_parts(start: float, end: float,
                      mark: str) -> tuple[list[str], list[Any]]:
    """The UNION ALL parts (and their parameters) counting messages per topic in
    [start, end): whole days from ``stats_topic_days``, part days from the messages.
    ``mark`` is the backend's placeholder (``?`` or ``%s``)."""
    first, last, edges = day_split(start, end)
    parts: list[str] = []
    params: list[Any] = []
    if first < last:
        parts.append("SELECT topic, messages AS n FROM stats_topic_days"  # noqa: S608
                     f" WHERE day >= {mark} AND day < {mark}")
        params += [first, last]
    for a, b in edges:
        parts.append("SELECT topic, COUNT(*) AS n FROM messages"  # noqa: S608
                     f" WHERE timestamp >= {mark} AND timestamp < {mark} GROUP BY topic")
        params += [a, b]
    return parts, params


def name_count_parts(start: float, end: float, rollup: str, key: str, link: str,
                     mark: str) -> tuple[list[str], list[Any]]:
    """As :func:`topic_count_parts`, per name id of one kind (its ``rollup`` table, its
    ``link`` table and the link's ``key`` column)."""
    first, last, edges = day_split(start, end)
    parts: list[str] = []
    params: list[Any] = []
    if first < last:
        parts.append(f"SELECT {key} AS name_id, messages AS n FROM {rollup}"  # noqa: S608
                     f" WHERE day >= {mark} AND day < {mark}")
        params += [first, last]
    for a, b in edges:  # by the messages' time index, then each one's names
        parts.append(f"SELECT l.{key} AS name_id, COUNT(*) AS n FROM messages m"  # noqa: S608
                     f" JOIN {link} l ON l.message_id = m.id"
                     f" WHERE m.timestamp >= {mark} AND m.timestamp < {mark}"
                     f" GROUP BY l.{key}")
        params += [a, b]
    return parts, params


class SqliteHistory(HistoryStore):
    """The embedded history: one SQLite file (WAL), migrated on open."""

    #: Bound of the writer's name-id cache (per kind); the cache is made on first use.
    name_cache: int = NAME_CACHE
    _names: dict[str, dict[str, int]] | None = None

    def __init__(self, path: str | Path, *, query_timeout: float = 5.0, create: bool = True,
                 readonly: bool = False, cache_mb: int = 64, name_cache: int = NAME_CACHE,
                 count_limit: int = COUNT_LIMIT, count_budget_ms: int = COUNT_BUDGET_MS):
        self.path = Path(path)
        self.where = str(self.path)
        self.position_path = self.path
        self.count_limit = count_limit
        #: Seconds a count may run (0 ms: no budget, up to the read's ``query_timeout``).
        self.count_budget = count_budget_ms / 1000 if count_budget_ms > 0 else math.inf
        self.query_timeout = query_timeout
        self.cache_mb = cache_mb
        self.name_cache = name_cache
        self.dedup = MsgIds()
        #: Records staged for :meth:`flush` (at most the caller's batch).
        self._staged: list[Record] = []
        self._local = threading.local()
        self._deadline: dict[int, float] = {}
        if (readonly or not create) and not self.path.exists():
            raise HistoryError(f"no history database at {self.path} (run busgate record)")
        #: What fills the index file (indexfile.py); None: a reader's.
        self.indexer: indexfile.Indexer | None = None
        if readonly:  # a reader (busgate stats) neither migrates nor writes
            self._writer = None  # type: ignore[assignment]
            self._check_schema()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect()
            if migrate.apply_sqlite(self._writer) >= indexfile.SINCE:  # (not a test's old one)
                self.indexer = indexfile.Indexer(self.path)
                self.indexer.catch_up()  # a search of a store opened for writing finds all
        except (OSError, sqlite3.Error, migrate.MigrationError) as exc:
            raise HistoryError(f"cannot open the history database {self.path}: {exc}") \
                from None

    def _check_schema(self) -> None:
        try:
            missing, unknown = migrate.missing_sqlite(self._reader())
        except (sqlite3.Error, migrate.MigrationError) as exc:
            raise HistoryError(f"cannot read the history database {self.path}: {exc}") \
                from None
        if unknown:
            raise HistoryError(f"the history database {self.path} has schema version "
                               f"{unknown[-1]}, newer than this busgate; upgrade busgate")
        if missing and missing[0].startswith("001_"):
            raise HistoryError(f"{self.path} is not a busgate history database")
        if missing:
            raise HistoryError(f"the history database {self.path} lacks {', '.join(missing)}; "
                               "start busgate record or busgate web once to upgrade it")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=BUSY_TIMEOUT)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        self.tune(db)
        return db

    def tune(self, db: sqlite3.Connection) -> None:
        """Give a connection that writes the history (its own, or the recorder's
        position connection) ``history.cache_mb`` of page cache: the index pages a
        batch rewrites (links, topics, text) stay in memory; and its write-ahead log
        :data:`WAL_CHECKPOINT_PAGES` before a commit copies it back into the database."""
        db.execute(f"PRAGMA cache_size={-1024 * int(self.cache_mb)}")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")

    def writer(self) -> sqlite3.Connection:
        """The store's own write connection (autocommit: the caller opens transactions)."""
        return self._writer

    # -- writes ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            self.forget()
            raise
        db.execute("COMMIT")
        self.committed()

    def committed(self) -> None:
        """Messages were committed (their folded texts and names): the indexer thread,
        when one runs, is woken; else they are indexed now (a search after a write finds
        them)."""
        if self.indexer is None:
            return
        if self.indexer.running:
            self.indexer.wake()
        else:
            self.indexer.catch_up()

    def start_indexer(self) -> None:
        """Index behind the writes, in a thread (the recorder): what is behind first (a
        new index file fills in the background, logged), then each commit."""
        if self.indexer is not None:
            self.indexer.start()

    def stop_indexer(self) -> None:
        """Stop the thread, then index what it left, at most two chunks (a stop must
        not wait for the rest of a rebuild: the next writer does it)."""
        if self.indexer is not None:
            self.indexer.stop()
            try:
                self.indexer.catch_up(limit=2 * self.indexer.chunk)
            except sqlite3.Error as exc:  # the next writer catches up
                log.warning("history: index file %s not caught up: %s", self.indexer.path, exc)

    def index_lag(self) -> int:
        """Messages stored but not yet in the index file: its indexer is behind (a
        recorder's batch in flight, a rebuild, no writer running)."""
        def work(db: sqlite3.Connection) -> int:
            (top,) = db.execute("SELECT max(id) FROM messages_fold").fetchone()
            state = db.execute("SELECT upto FROM idx.index_state").fetchone()
            return max(0, (top or 0) - (state[0] if state else 0))
        return int(self._timed(work))

    def add(self, db: sqlite3.Connection, record: Record) -> bool:
        """Store ``record`` in the caller's transaction. A caller that rolls back a
        transaction this wrote in must call :meth:`forget` (a cached name id may be gone
        with it)."""
        message_id = self._insert(db, record)
        if message_id is None:
            return False
        db.execute(_INSERT_FOLD, (message_id, textindex.fold(record.text)))
        return True

    def stage(self, db: sqlite3.Connection, record: Record) -> None:
        """:meth:`add` for a batch: nothing is written until :meth:`flush`, which the
        caller runs last in the transaction.

        Why: a batch written at once costs a statement per table (``executemany``), not
        per row."""
        self._staged.append(record)

    def flush(self, db: sqlite3.Connection) -> int:
        """Write the staged records in the caller's transaction: messages, their links,
        then their text; how many were new (the others, by ``msg_id``, were stored
        already). A batch SQLite refuses (a lone surrogate in a name, say) is written
        again one message at a time, and a message refused alone is logged and left
        out, as the consumer leaves out a message its callback fails on; a database
        that fails (``OperationalError``: disk, I/O) fails the batch."""
        staged, self._staged = self._staged, []
        if not staged:
            return 0
        db.execute("SAVEPOINT flush")
        try:
            added = self._write(db, staged)
        except sqlite3.OperationalError:
            db.execute("ROLLBACK TO flush")
            db.execute("RELEASE flush")
            self.forget_names()
            raise
        except (sqlite3.Error, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            db.execute("ROLLBACK TO flush")
            self.forget_names()
            log.warning("history: a batch of %d was refused (%s); writing them one by one",
                        len(staged), exc)
            added = sum(self._add_alone(db, record) for record in staged)
        db.execute("RELEASE flush")
        return added

    def _write(self, db: sqlite3.Connection, staged: list[Record]) -> int:
        # the insert triggers stand aside while the row is there (004_batch_rollups.sql),
        # and a big batch drops them until its rollups are written (BATCH_TRIGGERS);
        # a timestamp SQLite's integer cast would clamp is left to them
        deferred = all(-ROLLUP_STAMP_LIMIT < r.timestamp < ROLLUP_STAMP_LIMIT
                       for r in staged)
        if deferred:
            db.execute("INSERT INTO rollups_deferred (one) VALUES (1)")
        aside = _set_triggers_aside(db) \
            if deferred and len(staged) >= TRIGGERS_ASIDE_MIN else []
        (top,) = db.execute("SELECT max(id) FROM messages").fetchone()
        fresh = {r.msg_id: r for r in reversed(staged)}  # the first of a repeated msg_id
        for msg_id in self.dedup.stored(db, list(fresh), (top or 0) + 1, len(fresh)):
            del fresh[msg_id]
        db.executemany(_INSERT_MESSAGE, [(r.msg_id, r.topic, r.category, r.timestamp,
                                          r.publisher, r.seq_id, r.envelope)
                                         for r in reversed(fresh.values())])
        # the rows past ``top`` are this batch's (the caller holds the write lock); a
        # msg_id without one was stored before, or earlier in this batch
        new = dict(db.execute("SELECT msg_id, id FROM messages WHERE id > ?", (top or 0,)))
        names: list[tuple[int, int, int, float]] = []
        texts: list[tuple[int, str]] = []
        rollups: dict[str, Counter[tuple[int, Any]]] = {t: Counter() for t in _ROLLUP}
        for record in staged:
            message_id = new.pop(record.msg_id, None)
            if message_id is None:
                continue
            stamp = record.timestamp
            day = _sql_day(stamp)
            rollups["activity_hourly"][int(stamp / 3600), record.category] += 1
            rollups["stats_topic_days"][day, record.topic] += 1
            for table, found in (("users", record.users), ("packages", record.packages)):
                for name in found:
                    names.append((message_id, _KIND[table], self._name_id(db, table, name),
                                  stamp))
            texts.append((message_id, record.text))
        db.executemany(_INSERT_NAME, names)
        if deferred:
            for table, counts in rollups.items():
                db.executemany(_ROLLUP[table], [(*key, n) for key, n in counts.items()])
            for sql in aside:  # back before anyone else can write (or read) the tables
                db.execute(sql)
            db.execute("DELETE FROM rollups_deferred")
        db.executemany(_INSERT_FOLD, [(message_id, textindex.fold(text))
                                      for message_id, text in texts])
        return len(texts)

    def _add_alone(self, db: sqlite3.Connection, record: Record) -> bool:
        db.execute("SAVEPOINT one")
        try:
            added = self.add(db, record)
        except sqlite3.OperationalError:
            db.execute("ROLLBACK TO one")
            db.execute("RELEASE one")
            raise
        except (sqlite3.Error, ValueError):
            db.execute("ROLLBACK TO one")
            self.forget_names()
            log.exception("history: message %s not stored", record.msg_id)
            added = False
        db.execute("RELEASE one")
        return added

    def forget(self) -> None:
        """After a rollback: drop staged records and cached name ids (they may be gone)."""
        self._staged = []
        self.forget_names()

    def forget_names(self) -> None:
        """After a savepoint's rollback: a new name's row may be gone."""
        self._names = None

    def _insert(self, db: sqlite3.Connection, record: Record) -> int | None:
        """The message's row and its names; its id (None: already stored)."""
        (top,) = db.execute("SELECT max(id) FROM messages").fetchone()
        if self.dedup.stored(db, [record.msg_id], (top or 0) + 1, 1):
            return None
        cursor = db.execute(_INSERT_MESSAGE, (record.msg_id, record.topic, record.category,
                                              record.timestamp, record.publisher,
                                              record.seq_id, record.envelope))
        if cursor.rowcount != 1:
            return None
        # no RETURNING: it makes the statement take a savepoint
        message_id = int(cursor.lastrowid)  # type: ignore[arg-type]
        stamp = record.timestamp
        for table, names in (("users", record.users), ("packages", record.packages)):
            for name in names:  # mostly one: execute costs less than executemany
                db.execute(_INSERT_NAME, (message_id, _KIND[table],
                                          self._name_id(db, table, name), stamp))
        return message_id

    def _name_id(self, db: sqlite3.Connection, table: str, name: str) -> int:
        """The id of a user/package name: from the cache (most names are known), else a
        read, and a write only for a new name."""
        if self._names is None:
            self._names = {"users": {}, "packages": {}}
        cache = self._names[table]
        found = cache.get(name)
        if found is not None:
            return found
        row = db.execute(_FIND_NAME[table], (name,)).fetchone()
        name_id = row[0] if row else db.execute(_NEW_NAME[table], (name,)).lastrowid
        if len(cache) >= self.name_cache:
            cache.clear()  # bounded; the frequent names come back in a few messages
        cache[name] = name_id
        return int(name_id)

    def add_many(self, records: Iterable[Record]) -> int:
        added = 0
        batch: list[Record] = []

        def flush() -> int:
            with self.transaction() as db:
                n = sum(self.add(db, record) for record in batch)
            batch.clear()
            return n

        for record in records:
            batch.append(record)
            if len(batch) >= BATCH:
                added += flush()
        if batch:
            added += flush()
        return added

    # -- reads -------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True,
                                 isolation_level=None, check_same_thread=False, timeout=30.0)
            indexfile.attach(db, self.path)
            key = id(db)
            deadlines = self._deadline

            def over() -> int:  # non-zero aborts the running statement
                return int(time.monotonic() > deadlines.get(key, float("inf")))

            db.set_progress_handler(over, PROGRESS_STEPS)
            self._local.db = db
        return db

    def _timed(self, work: Any) -> Any:
        db = self._reader()
        self._deadline[id(db)] = time.monotonic() + self.query_timeout
        try:
            return work(db)
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise QueryTimeout(f"the query ran past history.query_timeout "
                                   f"({self.query_timeout:g} s)") from None
            raise
        finally:
            self._deadline.pop(id(db), None)

    def search(self, query: Query) -> Page:
        """One page of ``query``, newest (or oldest) first, and its count.

        Query shapes that stay fast at a million messages (bench/history.py):
        a single user or package drives from its link table, whose key is (name,
        time, message); ``contains`` reads the text index newest id first and checks
        that nothing older by id is newer by time (else the general plan); ``contains``
        with a user, package, topic or category intersects ids in bounded steps
        (:func:`_combined_rows`). The total
        is counted as on PostgreSQL (pgstore's module docstring): the page is read
        first, one row more than asked; a page holding the last match gives the exact
        total without counting; else the count stops at ``count_limit`` or after
        ``count_budget_ms`` (``Page.capped``: a lower bound, at least what the page
        proves, so ``pages`` reaches past a page that has a next one)."""
        size = query.rows_per_page
        offset = 0 if query.cursor is not None else (query.page - 1) * size
        asked = query

        def work(db: sqlite3.Connection) -> Page:
            query = _facetted(db, asked)
            rows, total, index, scan = None, None, _index_first(db, query), None
            if query.contains and _alone(query):
                rows = _contains_rows(db, query, offset, size + 1)
            elif query.contains:
                rows, total, scan = (_combined_rows(db, query, offset, size + 1)
                                     or (None, None, None))
            if rows is None:
                rows = _rows(db, query, offset, size + 1, index)
            more = len(rows) > size
            del rows[size:]
            limit = self.count_limit

            def count() -> tuple[int, bool] | None:
                if total is not None:  # every match was seen reading the page
                    return min(total, limit), total > limit
                if scan is not None and self._beyond_budget(db, scan):
                    return None
                return self._count(db, query, index)

            return page_of(_with_names(db, rows), query, offset, more, limit, count)

        return self._timed(work)

    def _beyond_budget(self, db: sqlite3.Connection, scan: _TextScan) -> bool:
        """Whether counting a combined ``contains`` query would read matches for
        :data:`COUNT_SKIP_FACTOR` times ``count_budget_ms`` or more, by what reading its
        page saw (:meth:`_TextScan.count_reads`): such a count ends cut by the budget
        with the lower bound the page proves, so it is not started. Why: a frequent
        term with a name it is rarely with (amd64 and a user of 1,000 messages) reads
        every match of the term to count: 0.4-0.8 s at 1,000,000, cut at 150 ms, half of
        such a request's time. Never without a budget (``count_budget_ms`` 0)."""
        if math.isinf(self.count_budget):
            return False
        (top,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
        reads = scan.count_reads(self.count_limit, top)
        return reads * COUNT_MATCH_SECONDS > COUNT_SKIP_FACTOR * self.count_budget

    def _count(self, db: sqlite3.Connection, query: Query,
               index: str | None = None) -> tuple[int, bool] | None:
        """Matches of ``query`` up to ``count_limit`` + 1: (count, capped); None when
        counting ran past ``count_budget_ms`` or the read's ``query_timeout`` (whichever
        ends first, as PostgreSQL's count timeout): the progress handler stops it. Run
        after the page is complete, so a cut count costs no answer. One ``COUNT(*)`` in
        SQLite's own loop: fetching the rows to count them in Python (to know how far a
        cut count got) cost 2-3 ms more per 10,000 matches, x1.5-1.9 on a topic's p50."""
        source, where, params = _source(query, index)
        key = id(db)
        deadline = self._deadline.get(key, math.inf)
        self._deadline[key] = min(deadline, time.monotonic() + self.count_budget)
        try:
            (found,) = db.execute(
                f"SELECT COUNT(*) FROM (SELECT 1 FROM {source} WHERE {where} LIMIT ?)",  # noqa: S608
                (*params, self.count_limit + 1)).fetchone()
        except sqlite3.OperationalError as exc:
            if "interrupted" not in str(exc):  # (only the progress handler interrupts)
                raise
            return None
        finally:
            self._deadline[key] = deadline
        return (self.count_limit, True) if found > self.count_limit else (found, False)

    def get(self, msg_id: str) -> Stored | None:
        def work(db: sqlite3.Connection) -> Stored | None:
            row = self.dedup.find(db, msg_id, "id, msg_id, timestamp, envelope")
            found = _with_names(db, [] if row is None else [row])
            return found[0] if found else None

        return self._timed(work)

    def since(self, after: Position, limit: int) -> list[tuple[Position, Stored]]:
        """Rows with id > ``after.id``, ascending: id order is commit order here (see
        :class:`Position`; ``tests/test_dashboard.py`` checks it with two writers)."""
        def work(db: sqlite3.Connection) -> list[Stored]:
            rows = db.execute("SELECT id, msg_id, timestamp, envelope FROM messages"
                              " WHERE id > ? ORDER BY id LIMIT ?",
                              (after.id, limit)).fetchall()
            return _with_names(db, rows)

        return [(Position(0, row.id), row) for row in self._timed(work)]

    def activity(self, start: float, end: float, bucket: int) -> dict[str, list[int]]:
        if bucket <= 0 or bucket % 3600:
            raise ValueError(f"bucket must be a positive multiple of 3600, not {bucket}")
        first = math.floor(start / 3600)
        size = bucket // 3600
        slots = max(0, math.ceil((end - first * 3600) / bucket))

        def work(db: sqlite3.Connection) -> dict[str, list[int]]:
            out: dict[str, list[int]] = {}
            for hour, category, count in db.execute(
                    "SELECT hour, category, count FROM activity_hourly"
                    " WHERE hour >= ? AND hour < ? AND count > 0",
                    (first, math.ceil(end / 3600))):
                out.setdefault(category, [0] * slots)[(hour - first) // size] += count
            return out

        return self._timed(work)

    def name_activity(self, kind: str, name: str, start: float, end: float,
                      bucket: int) -> dict[str, list[int]]:
        table, link, key = {"users": ("users", "user_messages", "user_id"),
                            "packages": ("packages", "package_messages", "package_id")}[kind]
        slots = max(0, math.ceil((end - start) / bucket))

        def work(db: sqlite3.Connection) -> dict[str, list[int]]:
            out: dict[str, list[int]] = {}
            # each link's category from the category index (category, timestamp, id),
            # one look-up per category, not from its message's row: a frequent name's
            # month is 10,000-25,000 rows scattered over the file, 0.4-0.5 s to read
            # from disk at 1,000,000 messages (the category index: 80-250 ms)
            categories = [c for (c,) in db.execute(_CATEGORIES, (CHART_CATEGORIES + 1,))]
            if len(categories) <= CHART_CATEGORIES:
                messages = ("messages m INDEXED BY messages_category ON m.category IN"
                            f" ({_marks(categories)}) AND m.timestamp = l.timestamp"
                            " AND m.id = l.message_id")
            else:
                messages, categories = "messages m ON m.id = l.message_id", []
            for slot, category, count in db.execute(
                    f"SELECT CAST((l.timestamp - ?) / ? AS INTEGER), m.category, COUNT(*)"  # noqa: S608
                    f" FROM {link} l JOIN {messages}"
                    f" WHERE l.{key} = (SELECT id FROM {table} WHERE name = ?)"
                    " AND l.timestamp >= ? AND l.timestamp < ? GROUP BY 1, 2",
                    (start, bucket, *categories, name, start, end)):
                if 0 <= slot < slots:
                    out.setdefault(category, [0] * slots)[slot] += count
            return out

        return self._timed(work)

    def last_position(self) -> Position:
        return Position(0, self._timed(
            lambda db: db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]))

    def recent(self, query: Query) -> list[Stored]:
        where, params = _where(query)
        order = "DESC" if query.order == "desc" else "ASC"
        paging, page_params = _after(query)

        def work(db: sqlite3.Connection) -> list[Stored]:
            rows = db.execute(
                f"SELECT m.id, m.msg_id, m.timestamp, m.envelope FROM messages m"  # noqa: S608
                f" WHERE {where}{paging} ORDER BY m.timestamp {order}, m.id {order} LIMIT ?",
                (*params, *page_params, query.rows_per_page)).fetchall()
            return _with_names(db, rows)

        return self._timed(work)

    def count(self) -> int:
        return self._timed(lambda db: db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def topic_counts(self, start: float, end: float) -> dict[str, int]:
        check_range(start, end)
        parts, params = topic_count_parts(start, end, "?")
        if not parts:
            return {}
        sql = (f"SELECT topic, SUM(n) AS total FROM ({' UNION ALL '.join(parts)})"  # noqa: S608
               " GROUP BY topic ORDER BY total DESC, topic LIMIT ?")
        rows = self._timed(lambda db: db.execute(sql, (*params, MAX_TOPICS)).fetchall())
        return dict(rows)

    def top_names(self, kind: str, start: float, end: float, limit: int) -> list[tuple[str, int]]:
        if kind not in _NAME_KINDS:
            raise ValueError(f"kind must be one of {', '.join(_NAME_KINDS)}, not {kind!r}")
        if not 1 <= limit <= MAX_TOP:
            raise ValueError(f"limit must be 1..{MAX_TOP}, not {limit}")
        check_range(start, end)
        rollup, key, names, link = _NAME_KINDS[kind]
        parts, params = name_count_parts(start, end, rollup, key, link, "?")
        if not parts:
            return []
        sql = (f"SELECT t.name, SUM(x.n) AS total FROM ({' UNION ALL '.join(parts)}) x"  # noqa: S608
               f" JOIN {names} t ON t.id = x.name_id GROUP BY x.name_id"
               " ORDER BY total DESC, t.name LIMIT ?")
        rows = self._timed(lambda db: db.execute(sql, (*params, limit)).fetchall())
        return [(name, total) for name, total in rows]

    def msg_ids(self) -> list[str]:
        """Every stored msg_id in insertion order (tests, checks)."""
        return [r[0] for r in self._writer.execute("SELECT msg_id FROM messages ORDER BY id")]

    def close(self) -> None:
        # the reader first: a file's last connection to close folds its write-ahead
        # log back in, and a read-only one cannot (the indexer's and the writer's can)
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
        if self.indexer is not None:
            self.stop_indexer()
            self.indexer.close()
            self.indexer = None
        if self._writer is not None:
            self._writer.close()


def page_of(stored: list[Stored], query: Query, offset: int, more: bool, limit: int,
            count: Callable[[], tuple[int, bool] | None]) -> Page:
    """The page of ``stored`` rows (both backends): its total exact without counting when
    the page holds the last match; else ``count()`` (count, capped), or None when the count
    ran past its budget, and the total is then what the page proves: the full pages
    before it (when it has a row), its rows, and one more when a next page follows."""
    seen = (offset if stored else 0) + len(stored) + more
    if query.cursor is None and not more and (stored or not offset):
        return Page(stored, min(seen, limit), seen > limit, more)
    counted = count()
    if counted is None:
        return Page(stored, min(seen, limit), True, more)
    return Page(stored, *counted, more)


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _where(query: Query, *, skip_link: str | None = None, skip_text: bool = False,
           skip_time: bool = False, probe: bool = False,
           id_col: str = "m.id") -> tuple[str, list[Any]]:
    """The WHERE clause of ``query`` (datagrepper's: OR within a kind, AND across kinds,
    ``not_*`` excludes any of its values), on ``messages m``; ``skip_link`` /
    ``skip_text`` / ``skip_time``: a condition the caller's FROM already applies.
    ``probe``: a user/package is looked up per message (its link's message index), for
    a caller that checks a bounded set of ids: as ``IN``, SQLite first lists every link
    of the name (290,000 of a frequent user at 1,000,000: ~80 ms). ``id_col``: the
    message id the user/package conditions test (the text index's ``t.rowid``: checked
    before the message's row is read)."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.start is not None and not skip_time:
        clauses.append("m.timestamp >= ?")
        params.append(query.start)
    if query.end is not None and not skip_time:
        clauses.append("m.timestamp <= ?")
        params.append(query.end)
    carried = isinstance(query, _Facetted)  # in its text index match: every plan applies it
    for column, values, negate in (("topic", query.topics, False),
                                   ("category", query.categories, False),
                                   ("topic", query.not_topics, True),
                                   ("category", query.not_categories, True)):
        if values and not carried:
            clauses.append(f"m.{column} {'NOT ' if negate else ''}IN ({_marks(values)})")
            params += values
    for table, link, key, values, negate in (
            ("users", "user_messages", "user_id", query.users, False),
            ("packages", "package_messages", "package_id", query.packages, False),
            ("users", "user_messages", "user_id", query.not_users, True),
            ("packages", "package_messages", "package_id", query.not_packages, True)):
        if values and not (link == skip_link and not negate):
            names = f"(SELECT id FROM {table} WHERE name IN ({_marks(values)}))"  # noqa: S608
            if probe:
                clauses.append(f"{'NOT ' if negate else ''}EXISTS (SELECT 1 FROM {link} l"  # noqa: S608
                               f" WHERE l.message_id = {id_col} AND l.{key} IN {names})")
            else:
                clauses.append(f"{id_col} {'NOT ' if negate else ''}IN"  # noqa: S608
                               f" (SELECT l.message_id FROM {link} l WHERE l.{key} IN {names})")
            params += values
    if query.contains and not skip_text:
        recheck, recheck_params = _recheck(query, "m.id")
        clauses.append("m.id IN (SELECT rowid FROM messages_text"  # noqa: S608
                       f" WHERE messages_text MATCH ?){recheck}")
        params += [_match(query), *recheck_params]
    return (" AND ".join(clauses) or "1"), params


def _match(query: Query) -> str:
    """The text index's query: every match of ``contains``, and candidates that
    :func:`_recheck` tells apart (:mod:`gateway.history.textindex`); of those, only
    the messages of a :class:`_Facetted` query's topics and categories."""
    terms = textindex.match(query.contains)
    if not isinstance(query, _Facetted):
        return terms
    found = f"({terms}) AND {query.facets}" if query.facets else f"({terms})"
    return f"({found}) NOT {query.excluded}" if query.excluded else found


@dataclass(frozen=True)
class _Facetted(Query):
    """A ``contains`` query whose topics and categories (``not_*`` too) are in its text
    index match (``facets``: :func:`textindex.facet_match` of each kind, ANDed;
    ``excluded``: the ``not_*`` ones, ORed, after FTS5's NOT): no plan reads a
    message's row for them, and the index intersects them with the term's matches
    (a frequent term never with a topic: 0.4-0.55 s at 1,000,000 messages, every
    match's row read, against 0.06-0.09 s; with three categories excluded, 4.6 s)."""
    facets: str = ""
    excluded: str = ""


def _facetted(db: sqlite3.Connection, query: Query) -> Query:
    """``query`` as a :class:`_Facetted` one when it has ``contains`` and topics or
    categories (or ``not_*`` ones), all indexed with markers; else ``query`` itself. A
    name the index file has no id for is on no indexed message: only indexed messages
    match ``contains`` (one to include finds nothing; one to exclude, nothing to take
    out). An index file of an earlier layout (a reader before any writer upgraded it)
    has no facets: ``query`` itself.

    An exclusion is asked as the topics (categories) it keeps when those are fewer: the
    ones named less the excluded, or, none named, every one the index file knows less
    the excluded. Why: FTS5's NOT reads the doclists of every excluded marker, and a
    positive marker's matches are intersected: at 1,000,000 messages debian.org
    without three of four categories (an empty answer) 251-289 ms, with the fourth
    alone 100-104 ms; unstable without dak 31-35 ms, with the other three 45-51 ms."""
    if not query.contains or not (query.topics or query.categories or query.not_topics
                                  or query.not_categories):
        return query
    parts, excluded = [], []
    for kind, named, unwanted in ((textindex.TOPIC, query.topics, query.not_topics),
                                  (textindex.CATEGORY, query.categories, query.not_categories)):
        try:
            wanted_ids = _facet_ids(db, kind, named)
            unwanted_ids = _facet_ids(db, kind, unwanted)
            if any(row_id >= textindex.FACET_IDS for row_id in (*wanted_ids, *unwanted_ids)):
                return query
            if named:  # the exclusion taken out of the names
                skip = set(unwanted_ids)
                parts.append(textindex.facet_match(kind, [i for i in wanted_ids
                                                          if i not in skip]))
                continue
            if not unwanted_ids:
                continue
            kept = _kept_facets(db, kind, unwanted_ids)
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return query
        if kept is not None:
            parts.append(textindex.facet_match(kind, kept))
        else:
            excluded.append(textindex.facet_match(kind, unwanted_ids))
    return _Facetted(**{f.name: getattr(query, f.name) for f in fields(query)},
                     facets=" AND ".join(parts),
                     excluded="(" + " OR ".join(excluded) + ")" if excluded else "")


def _kept_facets(db: sqlite3.Connection, kind: int, unwanted: list[int]) -> list[int] | None:
    """The ids of every ``kind`` facet the index file knows but ``unwanted``, when they
    are fewer than those (and all have markers); else None. Reads at most twice as many
    ids as ``unwanted`` holds."""
    limit = 2 * len(unwanted)
    known = [i for (i,) in db.execute("SELECT id FROM facets WHERE kind = ? LIMIT ?",
                                      (kind, limit))]
    if len(known) >= limit:  # as many kept as excluded, or more: FTS5's NOT
        return None
    skip = set(unwanted)
    kept = [i for i in known if i not in skip]
    return kept if all(i < textindex.FACET_IDS for i in kept) else None


def _facet_ids(db: sqlite3.Connection, kind: int, names: Sequence[str]) -> list[int]:
    """The index file's ids of ``names`` (a topic or category it has never indexed has
    none)."""
    if not names:
        return []
    return [row_id for (row_id,) in db.execute(
        f"SELECT id FROM facets WHERE kind = ? AND name IN ({_marks(names)})",  # noqa: S608
        (kind, *names))]


def _recheck(query: Query, id_expr: str) -> tuple[str, list[Any]]:
    """`` AND ...`` keeping the text index's candidates (ids ``id_expr``) that hold a
    term of ``contains``, checked against their folded text; ``""`` when the index's
    candidates are exact (terms of 3 characters)."""
    return textindex.recheck_sql(query.contains, id_expr)


def _link_time(query: Query) -> tuple[str, list[Any]]:
    """The time bounds again on the driving link's own copy of the time (its key)."""
    sql, params = "", []
    if query.start is not None:
        sql, params = sql + " AND d.timestamp >= ?", [*params, query.start]
    if query.end is not None:
        sql, params = sql + " AND d.timestamp <= ?", [*params, query.end]
    return sql, params


def _driver(query: Query) -> tuple[str, str, str] | None:
    """(table, link, key) of the one user or package that can drive the query (its link
    table is in time order), or None."""
    if len(query.users) == 1:
        return "users", "user_messages", "user_id"
    if len(query.packages) == 1:
        return "packages", "package_messages", "package_id"
    return None


def _source(query: Query, index: str | None = None) -> tuple[str, str, list[Any]]:
    """FROM, WHERE and parameters of the rows matching ``query`` (for the count);
    ``index``: the topic's or category's index drives (:func:`_index_first`).

    ``contains`` with a user or package: the term's matches, each looked up in the
    name's links (and its message's row read only when another filter needs it), not
    the name's links each checked against a list of every match of the term: that
    list alone is 180 ms of a frequent term at 1,000,000, past the count's budget.
    (Not in steps of ids as the page is read: a step's list of 4,000-65,000 ids cost
    more than the look-ups it saved, x1.6-4 on a count.)"""
    driver = _driver(query)
    if index is not None:
        where, params = _where(query, probe=True)
        return f"messages m INDEXED BY messages_{index}", where, params
    if query.contains and driver is not None:
        where, params = _where(query, skip_text=True, probe=True, id_col="t.rowid")
        recheck, recheck_params = _recheck(query, "t.rowid")
        row = any((query.start is not None, query.end is not None,
                   not isinstance(query, _Facetted) and (
                       query.topics or query.categories or query.not_topics
                       or query.not_categories)))
        return ("messages_text t" + (" JOIN messages m ON m.id = t.rowid" if row else ""),
                f"messages_text MATCH ? AND {where}{recheck}",
                [_match(query), *params, *recheck_params])
    if driver is not None:
        table, link, key = driver
        name = query.users[0] if table == "users" else query.packages[0]
        # the time bounds go on the link's copy of the time (_link_time) only: on the
        # message too, a count would read every matching message's row (10,000 pages)
        where, params = _where(query, skip_link=link, skip_time=True)
        bounds, bound_params = _link_time(query)
        return (f"{link} d" + ("" if where == "1" else " JOIN messages m ON m.id = d.message_id"),
                f"d.{key} = (SELECT id FROM {table} WHERE name = ?){bounds} AND {where}",  # noqa: S608
                [name, *bound_params, *params])
    if query.contains:  # names looked up per match (probe), as above
        where, params = _where(query, skip_text=True, probe=True, id_col="t.rowid")
        recheck, recheck_params = _recheck(query, "t.rowid")
        return ("messages_text t" + ("" if where == "1" else " JOIN messages m ON m.id = t.rowid"),
                f"messages_text MATCH ? AND {where}{recheck}",
                [_match(query), *params, *recheck_params])
    where, params = _where(query)
    return "messages m", where, params


def _index_first(db: sqlite3.Connection, query: Query) -> str | None:
    """"topic" or "category" when that one value's index should drive a query with a
    single user or package (and no ``contains``) instead of the name's links, else None.

    Why: the links drive such a query, each one's message read to check its topic: a
    frequent user with a rare topic read all of its 290,000 links at 1,000,000 messages
    to find a page. Driven by the sparser of the two, in time order either way, the
    other is checked per entry by an index look-up. Which is sparser: of their first
    :data:`SPARSER_PROBE` entries in the query's range and order, the one reaching
    further in time (or ending first)."""
    driver = _driver(query)
    column, values = (("topic", query.topics) if query.topics
                      else ("category", query.categories))
    if driver is None or query.contains or len(values) != 1:
        return None
    table, link, key = driver
    name = query.users[0] if table == "users" else query.packages[0]
    order = "DESC" if query.order == "desc" else "ASC"
    bounds, bound_params = _link_time(query)
    links = db.execute(
        f"SELECT d.timestamp FROM {link} d WHERE d.{key} = (SELECT id FROM {table}"  # noqa: S608
        f" WHERE name = ?){bounds} ORDER BY d.timestamp {order} LIMIT ?",
        (name, *bound_params, SPARSER_PROBE)).fetchall()
    if len(links) < SPARSER_PROBE:
        return None
    entries = db.execute(
        f"SELECT d.timestamp FROM messages d INDEXED BY messages_{column}"  # noqa: S608
        f" WHERE d.{column} = ?{bounds} ORDER BY d.timestamp {order} LIMIT ?",
        (values[0], *bound_params, SPARSER_PROBE)).fetchall()
    if len(entries) < SPARSER_PROBE:
        return column
    reach = abs(entries[-1][0] - entries[0][0]) > abs(links[-1][0] - links[0][0])
    return column if reach else None


def _rows(db: sqlite3.Connection, query: Query, offset: int, size: int,
          index: str | None = None) -> list[tuple[Any, ...]]:
    """``size`` rows from ``offset`` in (timestamp, id) order; a single user/package
    drives from its links, or ``index`` (:func:`_index_first`) from its index."""
    order = "DESC" if query.order == "desc" else "ASC"
    driver = _driver(query)
    if driver is None or index is not None:
        where, params = _where(query, probe=index is not None)
        paging, page_params = _after(query)
        source = f"messages m INDEXED BY messages_{index}" if index else "messages m"
        return db.execute(
            f"SELECT m.id, m.msg_id, m.timestamp, m.envelope FROM {source}"  # noqa: S608
            f" WHERE {where}{paging} ORDER BY m.timestamp {order}, m.id {order}"
            " LIMIT ? OFFSET ?",
            (*params, *page_params, size, offset)).fetchall()
    table, link, key = driver
    name = query.users[0] if table == "users" else query.packages[0]
    where, params = _where(query, skip_link=link, skip_time=True)  # _link_time has them
    bounds, bound_params = _link_time(query)
    paging, page_params = _after(query, "d.timestamp", "d.message_id")
    return db.execute(
        f"SELECT m.id, m.msg_id, m.timestamp, m.envelope FROM {link} d"  # noqa: S608
        f" JOIN messages m ON m.id = d.message_id"
        f" WHERE d.{key} = (SELECT id FROM {table} WHERE name = ?){bounds} AND {where}{paging}"
        f" ORDER BY d.timestamp {order}, d.message_id {order} LIMIT ? OFFSET ?",
        (name, *bound_params, *params, *page_params, size, offset)).fetchall()


def _contains_rows(db: sqlite3.Connection, query: Query, offset: int,
                   size: int) -> list[tuple[Any, ...]] | None:
    """``size`` rows from ``offset`` of a ``contains`` query, read from the text index
    in id order (newest id first for ``desc``), which stops early, instead of every
    match of a frequent term sorted by time. Ids follow time closely but not always (a
    backfill stores old messages late): the answer stands only when no message beyond
    the ids read is nearer in time than its last row; otherwise None (the caller takes
    the general plan)."""
    need = offset + size
    desc = query.order == "desc"
    where, params = _where(query, skip_text=True)
    paging, page_params = _after(query)
    recheck, recheck_params = _recheck(query, "t.rowid")
    read = need * CONTAINS_READ_FACTOR
    found = db.execute(
        f"SELECT m.id, m.msg_id, m.timestamp, m.envelope FROM messages_text t"  # noqa: S608
        f" JOIN messages m ON m.id = t.rowid WHERE messages_text MATCH ?"
        f" AND {where}{paging}{recheck}"
        f" ORDER BY t.rowid {'DESC' if desc else 'ASC'} LIMIT ?",
        (_match(query), *params, *page_params, *recheck_params, read)).fetchall()
    found.sort(key=lambda r: (r[2], r[0]), reverse=desc)
    if len(found) < read:  # every match was read
        return found[offset:need]
    if len(found) < need:
        return None
    frontier = min(r[0] for r in found) if desc else max(r[0] for r in found)
    stamp, last_id = found[need - 1][2], found[need - 1][0]
    op = ">" if desc else "<"
    # any message (matching or not) past the ids read that would sort before the last row?
    beyond = db.execute(
        f"SELECT 1 FROM messages WHERE id {'<' if desc else '>'} ? AND (timestamp {op} ?"  # noqa: S608
        f" OR (timestamp = ? AND id {op} ?)) LIMIT 1",
        (frontier, stamp, stamp, last_id)).fetchone()
    return None if beyond else found[offset:need]


def _alone(query: Query) -> bool:
    """Whether ``contains`` is the query's only filter (time, paging and the topics and
    categories, ``not_*`` too, a :class:`_Facetted` query's match carries aside)."""
    carried = isinstance(query, _Facetted)
    return not (query.users or query.packages or query.not_users or query.not_packages
                or (not carried and (query.topics or query.categories or query.not_topics
                                     or query.not_categories)))


def _walker(query: Query) -> tuple[str, str, str, list[Any], str | None] | None:
    """(FROM, its id column, its key condition, parameters, link it applies) of one
    filter value whose index gives its messages in (timestamp, id) order: a single
    user or package (its link's key), else a single topic or category (its index)."""
    for table, link, key, values in (("users", "user_messages", "user_id", query.users),
                                     ("packages", "package_messages", "package_id",
                                      query.packages)):
        if len(values) == 1:
            return (f"{link} d", "message_id",
                    f"d.{key} = (SELECT id FROM {table} WHERE name = ?)",  # noqa: S608
                    [values[0]], link)
    for column, values in (("topic", query.topics), ("category", query.categories)):
        if len(values) == 1:
            return f"messages d INDEXED BY messages_{column}", "id", f"d.{column} = ?", \
                [values[0]], None
    return None


def _link_filter(query: Query) -> tuple[str, list[Any], str] | None:
    """(SQL, parameters, link table) keeping those of a set of ids (its first parameter)
    linked to one of the query's users, else packages; None when it names neither."""
    for table, link, key, values in (("users", "user_messages", "user_id", query.users),
                                     ("packages", "package_messages", "package_id",
                                      query.packages)):
        if values:
            return (f"SELECT DISTINCT l.message_id FROM {link} l"  # noqa: S608
                    " WHERE l.message_id IN (SELECT value FROM json_each(?))"
                    f" AND l.{key} IN (SELECT id FROM {table} WHERE name IN ({_marks(values)}))",
                    list(values), link)
    return None


def _ids(ids: Sequence[int]) -> str:
    """Ids as one parameter (``IN (SELECT value FROM json_each(?))``): no variable limit."""
    return json.dumps(list(ids))


def _combined_rows(db: sqlite3.Connection, query: Query, offset: int, size: int,
                   ) -> tuple[list[tuple[Any, ...]], int | None, _TextScan] | None:
    """``size`` rows from ``offset`` of ``contains`` with other filters, in the query's
    order, the number of matches when every one was found on the way (no cursor), else
    None, and the text scan (what it saw of the term); or None (the caller takes the
    general plan).

    Why: checking each of a frequent term's matches against the other filters by their
    messages' rows, or listing a name's every link to check them against, cost 0.1-0.9 s
    at 1,000,000 messages. Instead ids are intersected in bounded steps, by the cheaper
    of two ways (they cover the same stretch of the history, newest first, until the
    page is found): the term's matches in id order, each checked against the other
    filters (:class:`_TextScan`); or the other filter's own index in time order, each
    step's ids checked against the text index (:class:`_Walk`), the way for a rare name
    with a frequent term. The scan's first step (what gives a page of ``contains``
    alone) measures the term's density, the walk's first step its own. Both read ids
    alone; the page's rows are read last."""
    need = offset + size
    desc = query.order == "desc"
    scan = _TextScan(db, query, need)
    found = scan.advance(need * CONTAINS_READ_FACTOR)  # as _contains_rows' one read
    if found is None:
        walker = _walker(query)
        walk = None if walker is None else _Walk(db, query, walker, scan.density())
        if walk is not None and walk.cost() < scan.cost():
            found = walk.run(need)
        else:
            found = scan.advance(math.inf)
            if found is None and walk is not None:  # ids out of time order (a backfill)
                found = walk.run(need)
        if found is None:
            return None
    rows, every = found
    total = len(rows) if every and query.cursor is None else None
    page = [row_id for row_id, _ in rows[offset:need]]
    if not page:
        return [], total, scan
    read = db.execute("SELECT m.id, m.msg_id, m.timestamp, m.envelope FROM messages m"
                      " WHERE m.id IN (SELECT value FROM json_each(?))",
                      (_ids(page),)).fetchall()
    read.sort(key=lambda r: (r[2], r[0]), reverse=desc)
    return read, total, scan


class _TextScan:
    """A ``contains`` query's matches read from the text index in id order (newest
    first for ``desc``) in doubling steps, each step's ids checked against the other
    filters: by a user's (package's) link's message index first, no message row read,
    then by the rows of those left when another filter needs them."""

    def __init__(self, db: sqlite3.Connection, query: Query, need: int):
        self.db, self.query, self.need = db, query, need
        self.desc = query.order == "desc"
        self.link = _link_filter(query)
        self.where, self.params = _where(query, skip_text=True, probe=True,
                                         skip_link=None if self.link is None else self.link[2])
        self.paging, self.page_params = _after(query)
        self.recheck, self.recheck_params = _recheck(query, "m.id")
        self.match = _match(query)
        self.found: list[tuple[int, float]] = []
        self.first: int | None = None
        self.last: int | None = None
        self.read = 0
        self.step = need * CONTAINS_READ_FACTOR

    def density(self) -> float:
        """The term's matches per id over the ids read (1.0 before any)."""
        if self.first is None or self.last is None:
            return 1.0
        return self.read / (abs(self.last - self.first) + 1)

    def count_reads(self, limit: int, top: int) -> float:
        """About how many of the term's matches a count of the query reads (it stops at
        ``limit`` + 1 found): every one of the term's (its density over the ids read,
        up to ``top``), or fewer when as many of them as this read matched give enough."""
        every = self.density() * top
        hit = len(self.found) / self.read if self.read else 0.0
        return min(every, (limit + 1) / hit) if hit else every

    def cost(self) -> float:
        """Reading on, per id of the history, in matches read: each match and its check
        (a link look-up ~1, a message's row ~3)."""
        return self.density() * (2 if self.link is not None else 4)

    def advance(self, budget: float) -> tuple[list[tuple[int, float]], bool] | None:
        """(the first ``need`` matches as (id, timestamp), whether they are every match)
        once proven, reading at most ``budget`` more of the term's matches; None when
        that was not enough, or when the ids read are not proven to hold the first
        ``need`` by time (:func:`_contains_rows`' check: a backfill)."""
        db, desc = self.db, self.desc
        stop = self.read + budget
        while self.read < stop:
            take = int(min(self.step, stop - self.read))
            bound = "" if self.last is None else f" AND rowid {'<' if desc else '>'} ?"
            ids = [r for (r,) in db.execute(
                f"SELECT rowid FROM messages_text WHERE messages_text MATCH ?{bound}"  # noqa: S608
                f" ORDER BY rowid {'DESC' if desc else 'ASC'} LIMIT ?",
                (self.match, *([] if self.last is None else [self.last]), take))]
            if ids:
                self.first = ids[0] if self.first is None else self.first
                self.last = ids[-1]
                self.read += len(ids)
                kept = ids if self.link is None else [
                    r for (r,) in db.execute(self.link[0], (_ids(ids), *self.link[1]))]
                # NOT INDEXED: each id's row by its rowid, never a topic's whole index
                # and the text index's candidates checked last (_recheck)
                self.found += db.execute(
                    "SELECT m.id, m.timestamp FROM messages m NOT INDEXED WHERE m.id IN"  # noqa: S608
                    f" (SELECT value FROM json_each(?)) AND {self.where}{self.paging}"
                    f"{self.recheck}",
                    (_ids(kept), *self.params, *self.page_params,
                     *self.recheck_params)).fetchall() if kept else []
            self.found.sort(key=lambda r: (r[1], r[0]), reverse=desc)
            if len(ids) < take:  # every match was read
                return self.found, True
            if len(self.found) >= self.need:
                stamp, last_id = self.found[self.need - 1][1], self.found[self.need - 1][0]
                op, beyond_ids = (">", "<") if desc else ("<", ">")
                beyond = db.execute(
                    f"SELECT 1 FROM messages WHERE id {beyond_ids} ?"  # noqa: S608
                    f" AND (timestamp {op} ? OR (timestamp = ? AND id {op} ?)) LIMIT 1",
                    (self.last, stamp, stamp, last_id)).fetchone()
                return None if beyond else (self.found, False)
            self.step = min(self.step * 2, CONTAINS_STEP_MOST)
        return None


class _Walk:
    """A ``contains`` query's matches read from one other filter's index (``walker``:
    :func:`_walker`) in (timestamp, id) order, the answer's own, in steps of
    :data:`WALK_FIRST` to :data:`WALK_MOST` entries; a step's ids are checked against
    the text index (:func:`_in_text`, ``density``: the term's matches per id), then
    the ones found against the other filters. Exact, whatever the order of ids."""

    def __init__(self, db: sqlite3.Connection, query: Query,
                 walker: tuple[str, str, str, list[Any], str | None], density: float):
        self.db, self.query, self.density = db, query, density
        self.source, self.id_col, self.key, self.key_params, link = walker
        self.desc = query.order == "desc"
        self.where, self.params = _where(query, skip_text=True, skip_link=link,
                                         skip_time=True, probe=True)
        self.bounds, self.bound_params = _link_time(query)
        self.after = query.cursor
        # the first step, read now: how dense the walked index is
        self.chunk = self._next(WALK_PROBE)

    def _next(self, size: int) -> list[tuple[int, float]]:
        """The next ``size`` entries (id, timestamp) of the index after ``self.after``;
        the keyset bound is written as a range so that it seeks, not scans."""
        order = "DESC" if self.desc else "ASC"
        paging, page_params = "", []
        if self.after is not None:
            stamp, row_id = self.after
            near, far = ("<=", "<") if self.desc else (">=", ">")
            paging = (f" AND d.timestamp {near} ? AND (d.timestamp {far} ?"
                      f" OR d.{self.id_col} {far} ?)")
            page_params = [stamp, stamp, row_id]
        chunk = self.db.execute(
            f"SELECT d.{self.id_col}, d.timestamp FROM {self.source}"  # noqa: S608
            f" WHERE {self.key}{self.bounds}{paging}"
            f" ORDER BY d.timestamp {order}, d.{self.id_col} {order} LIMIT ?",
            (*self.key_params, *self.bound_params, *page_params, size)).fetchall()
        if chunk:
            self.after = (chunk[-1][1], chunk[-1][0])
        return chunk

    def cost(self) -> float:
        """Walking, per id of the history, in matches read: each entry (~1) and the
        term's matches over its span, or a text look-up per entry, the cheaper."""
        ids = [row_id for row_id, _ in self.chunk]
        if len(ids) < WALK_PROBE:  # the whole of it is read already
            return 0.0
        entries = len(ids) / (max(ids) - min(ids) + 1)
        return min(entries * TEXT_LOOKUP_COST, entries + self.density)

    def run(self, need: int) -> tuple[list[tuple[int, float]], bool]:
        """(the first ``need`` matches as (id, timestamp), whether they are every match)."""
        found: list[tuple[int, float]] = []
        pending, done = self.chunk, len(self.chunk) < WALK_PROBE
        # the first step: what should hold the page by the term's density (a look-up per
        # entry costs ~1 ms for a long term: the first entries read are not all checked)
        step = min(WALK_MOST, max(WALK_FIRST, math.ceil(1.5 * need / max(self.density, 1e-9))))
        while True:
            chunk, pending = pending[:step], pending[step:]
            if not chunk and not done:
                chunk = self._next(step)
                done = len(chunk) < step
            hits = _in_text(self.db, self.query, [row_id for row_id, _ in chunk], self.density)
            if hits and self.where != "1":
                hits = {row_id for (row_id,) in self.db.execute(
                    "SELECT m.id FROM messages m NOT INDEXED"  # noqa: S608
                    f" WHERE m.id IN (SELECT value FROM json_each(?)) AND {self.where}",
                    (_ids(sorted(hits)), *self.params))}
            found += [(row_id, stamp) for row_id, stamp in chunk if row_id in hits]
            if done and not pending:
                return found, True
            if len(found) >= need:
                return found, False
            step = min(step * 2, WALK_MOST)


def _in_text(db: sqlite3.Connection, query: Query, ids: list[int],
             density: float) -> set[int]:
    """Which of ``ids`` hold a term of ``query.contains``: the text index's candidates,
    by one read of the term's over their span when fewer are expected (``density`` per
    id) than :data:`TEXT_LOOKUP_COST` per id, else a look-up per id (a rare name's ids
    spread over the whole history); then those checked (:func:`_recheck`)."""
    if not ids:
        return set()
    match = _match(query)
    low, high = min(ids), max(ids)
    if (high - low + 1) * density <= TEXT_LOOKUP_COST * len(ids):
        found = {row_id for (row_id,) in db.execute(
            "SELECT rowid FROM messages_text WHERE messages_text MATCH ?"
            " AND rowid >= ? AND rowid <= ?", (match, low, high))}.intersection(ids)
    else:
        found = {row_id for (row_id,) in db.execute(
            "SELECT rowid FROM messages_text WHERE messages_text MATCH ?"
            " AND rowid IN (SELECT value FROM json_each(?))", (match, _ids(ids)))}
    recheck, recheck_params = _recheck(query, "c.value")
    if not found or not recheck:
        return found
    return {row_id for (row_id,) in db.execute(
        f"SELECT c.value FROM json_each(?) c WHERE 1{recheck}",  # noqa: S608
        (_ids(sorted(found)), *recheck_params))}


def _after(query: Query, stamp_col: str = "m.timestamp",
           id_col: str = "m.id") -> tuple[str, list[Any]]:
    """The condition for rows after ``query.cursor`` (timestamp, id) in its order."""
    if query.cursor is None:
        return "", []
    stamp, row_id = query.cursor
    op = "<" if query.order == "desc" else ">"
    return (f" AND ({stamp_col} {op} ? OR ({stamp_col} = ? AND {id_col} {op} ?))",
            [stamp, stamp, row_id])


def _with_names(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[Stored]:
    if not rows:
        return []
    ids = [r[0] for r in rows]
    names: dict[tuple[str, int], list[str]] = {}
    for kind, table, link, key in (("u", "users", "user_messages", "user_id"),
                                   ("p", "packages", "package_messages", "package_id")):
        for message_id, name in db.execute(
                f"SELECT l.message_id, t.name FROM {link} l JOIN {table} t"  # noqa: S608
                f" ON t.id = l.{key} WHERE l.message_id IN ({_marks(ids)})", ids):
            names.setdefault((kind, message_id), []).append(name)
    return [Stored(row_id, msg_id, stamp, envelope, tuple(sorted(names.get(("u", row_id), []))),
                   tuple(sorted(names.get(("p", row_id), []))))
            for row_id, msg_id, stamp, envelope in rows]
