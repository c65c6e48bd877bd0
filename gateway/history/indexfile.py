"""The SQLite history's read indexes in a file of its own, filled behind the recorder
by a thread of its own (``008_index_file.sql``): the ``contains`` index
(``messages_text``), the user and package links (``user_messages``,
``package_messages``) and their per-day counts (``stats_user_days``,
``stats_package_days``).

Why: at 1,000,000 stored messages these were more than half of what a batch cost the
recorder, most of it pages of big indexes rewritten at random, and a second file has a
write lock of its own. The recorder commits a batch (the message, its folded text in
``messages_fold``, its names in ``message_names``: rows appended in id order) and goes
on to the next; :class:`Indexer` meanwhile copies the new rows into the index file
with a few ``INSERT ... SELECT`` per chunk, inside SQLite, which lets go of Python's
GIL while they run: the two work on both cores at once.

The file is ``<history>-index`` beside the history (its ``-wal`` and ``-shm`` beside
it). It is derived: everything in it is made from ``messages_fold`` and
``message_names``, so a missing, foreign or stale one (or one of an older layout,
:data:`LAYOUT`) is filled again from there. ``index_state`` says which history it
belongs to (``history_identity``'s token) and how far it has got: every message with an
id up to ``upto`` is in it.

Beside each message's text the ``contains`` index holds its topic and category, as a
marker trigram each (:func:`~gateway.history.textindex.facet_marker`, ids in
``facets``; layout 3): ``contains`` with a topic or category is one intersection inside
the index, no message row read for them.

Readers attach it as ``idx`` (a query's unqualified ``messages_text`` or
``user_messages`` is found there). A search sees a message's text and names once the
indexer has them: within ~``POLL_SECONDS`` of its commit while a recorder runs
(:meth:`SqliteHistory.index_lag <gateway.history.store.SqliteHistory.index_lag>` says
how far behind it is). Indexing the folded text finds what indexing the text would: the
trigram tokenizer folds each character as :func:`~gateway.history.textindex.fold` does,
and folding twice changes nothing (tests/test_history_indexfile.py checks every
character).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from gateway.history import textindex
from gateway.history.textindex import CATEGORY, FACET_IDS, FACET_SQL, TOPIC

log = logging.getLogger(__name__)

#: The history's schema version that moved the read indexes here (008_index_file.sql).
SINCE = 8
#: The index file's layout (``PRAGMA user_version``): a file of another is made again.
LAYOUT = 3
#: Messages indexed per transaction of the index file: bounds its memory (FTS5 holds
#: a transaction's terms in memory until it writes them out: ~2 MB per 1,000 texts of
#: the bench's mix) and how long the index's write lock is held (~0.1-0.3 s).
CHUNK = 5000
#: Seconds between two looks at the history for new texts while nothing wakes the
#: indexer: how late, at most, a search sees a message another process wrote.
POLL_SECONDS = 0.1
#: Seconds a writer waits for the index file's lock (the indexer holds it a chunk).
BUSY_TIMEOUT = 30.0
#: A catch-up longer than this many messages is logged (an upgrade, a lost file).
LOG_BEHIND = 20_000

#: A timestamp's UTC day, as 003_stats.sql computes it (``{ts}``: the column).
DAY = "CAST({ts} / 86400.0 AS INTEGER) - ({ts} < CAST({ts} / 86400.0 AS INTEGER) * 86400)"
#: (kind in message_names, link table, its key, per-day table)
KINDS = ((0, "user_messages", "user_id", "stats_user_days"),
         (1, "package_messages", "package_id", "stats_package_days"))


def _kind_schema(link: str, key: str, days: str) -> tuple[str, ...]:
    """One kind's tables, and the triggers keeping its day counts when a link is deleted
    or moved (by hand: the indexer only inserts, and counts what it inserts)."""
    old, new = DAY.format(ts="OLD.timestamp"), DAY.format(ts="NEW.timestamp")
    less = (f"UPDATE {days} SET messages = messages - 1 WHERE day = {old}"  # noqa: S608
            f" AND {key} = OLD.{key}; DELETE FROM {days} WHERE day = {old}"
            f" AND {key} = OLD.{key} AND messages <= 0;")
    return (
        f"CREATE TABLE {{schema}}{link} ({key} INTEGER NOT NULL, timestamp REAL NOT NULL,"
        f" message_id INTEGER NOT NULL, PRIMARY KEY ({key}, timestamp, message_id))"
        " WITHOUT ROWID",
        f"CREATE INDEX {{schema}}{link}_message ON {link} (message_id)",
        f"CREATE TABLE {{schema}}{days} (day INTEGER NOT NULL, {key} INTEGER NOT NULL,"
        f" messages INTEGER NOT NULL, PRIMARY KEY (day, {key})) WITHOUT ROWID",
        f"CREATE TRIGGER {{schema}}{days}_delete AFTER DELETE ON {link} BEGIN {less} END",
        f"CREATE TRIGGER {{schema}}{days}_update AFTER UPDATE OF timestamp, {key} ON {link}"  # noqa: S608
        f" BEGIN {less} INSERT INTO {days} (day, {key}, messages) VALUES ({new},"
        f" NEW.{key}, 1) ON CONFLICT (day, {key}) DO UPDATE SET messages = messages + 1;"
        " END",
    )


#: (kind in facets, its column in messages and messages_text)
FACETS = ((TOPIC, "topic"), (CATEGORY, "category"))
#: A chunk's texts (ids ``?`` to ``?``) and facet markers; a text is passed through
#: ``indexed`` (textindex.indexed, in Python) only when it holds a character of the
#: facets' plane (GLOB ``?``, in C): ~never.
_ADD_TEXT = (
    "INSERT INTO messages_text (rowid, body, topic, category) SELECT f.id,"  # noqa: S608
    " CASE WHEN f.text GLOB ? THEN indexed(f.text) ELSE f.text END,"
    f" CASE WHEN t.id < {FACET_IDS} THEN {FACET_SQL.format(kind=TOPIC, id='t.id')} END,"
    f" CASE WHEN c.id < {FACET_IDS} THEN {FACET_SQL.format(kind=CATEGORY, id='c.id')} END"
    # CROSS JOIN: in this order (the chunk's ids first, each one's row, its facets' ids);
    # left to the planner, it walked a topic's whole index per facet (x5 at 1,000,000)
    " FROM history.messages_fold f CROSS JOIN history.messages m ON m.id = f.id"
    f" CROSS JOIN facets t ON t.kind = {TOPIC} AND t.name = m.topic"
    f" CROSS JOIN facets c ON c.kind = {CATEGORY} AND c.name = m.category"
    " WHERE f.id > ? AND f.id <= ?")

#: The index file's tables (``{schema}``: where they are made).
SCHEMA = (
    # topic, category: the message's facet markers (textindex.facet_marker), one trigram
    # each, so that contains with a topic or category is one intersection of the index
    "CREATE VIRTUAL TABLE {schema}messages_text USING fts5 (body, topic, category,"
    " content = '', tokenize = 'trigram', detail = none)",
    # the facets' ids: kind textindex.TOPIC or CATEGORY; made as messages are indexed
    "CREATE TABLE {schema}facets (id INTEGER PRIMARY KEY, kind INTEGER NOT NULL,"
    " name TEXT NOT NULL, UNIQUE (kind, name))",
    "INSERT INTO {schema}messages_text (messages_text, rank) VALUES ('automerge', 8)",
    # history: history_identity.token of its history; every message up to upto is in
    "CREATE TABLE {schema}index_state (one INTEGER PRIMARY KEY CHECK (one = 1),"
    " history TEXT NOT NULL, upto INTEGER NOT NULL)",
    *(statement for _, link, key, days in KINDS for statement in _kind_schema(link, key, days)),
)


def index_path(history: Path) -> Path:
    """The index file of the history at ``history``."""
    return Path(f"{history}-index")


def create(history: Path) -> None:
    """Make the index file (empty, belonging to no history yet) if it is missing, so a
    reader can attach it before any indexer ran."""
    db = sqlite3.connect(index_path(history), isolation_level=None, timeout=BUSY_TIMEOUT)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            (layout,) = db.execute("PRAGMA user_version").fetchone()
            if layout != LAYOUT:  # new, or of another layout: made (again), empty
                for kind, name in db.execute("SELECT type, name FROM sqlite_master WHERE"
                                             " type IN ('table', 'view') AND sql IS NOT NULL"
                                             " AND name NOT LIKE 'messages_text_%'").fetchall():
                    db.execute(f'DROP {kind.upper()} IF EXISTS "{name}"')
                for statement in SCHEMA:
                    db.execute(statement.format(schema=""))
                db.execute(f"PRAGMA user_version={LAYOUT}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.close()


def attach(db: sqlite3.Connection, history: Path) -> None:
    """Attach the index file to a reader of the history, read-only, as ``idx``; a
    history without one yet (a reader older than any writer) gets an empty one."""
    path = index_path(history)
    if path.exists():
        db.execute("ATTACH DATABASE ? AS idx", (f"{path.absolute().as_uri()}?mode=ro",))
        return
    log.warning("history: no index file at %s yet: contains, user and package find "
                "nothing until busgate record runs", path)
    db.execute("ATTACH DATABASE ':memory:' AS idx")
    for statement in SCHEMA:
        db.execute(statement.format(schema="idx."))


class Indexer:
    """Copies one history's new folded texts and names into its index file:
    :meth:`catch_up` at once, or a thread (:meth:`start`) that does it whenever
    :meth:`wake` is called or :data:`POLL_SECONDS` pass."""

    def __init__(self, history: Path, *, chunk: int = CHUNK, poll: float = POLL_SECONDS):
        self.history = history
        self.path = index_path(history)
        self.chunk = chunk
        self.poll = poll
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: ``upto`` as this indexer last committed it (None: not known yet).
        self._upto: int | None = None
        #: Messages indexed by this indexer, and the last error it met (None: none).
        self.indexed = 0
        self.error: str | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            create(self.history)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                 timeout=BUSY_TIMEOUT)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA cache_size=-65536")
            db.create_function("indexed", 1, textindex.indexed, deterministic=True)
            db.execute("ATTACH DATABASE ? AS history",
                       (f"{self.history.absolute().as_uri()}?mode=ro",))
            self._db = db
        return self._db

    def catch_up(self, limit: int | None = None, *, poll: bool = False) -> int:
        """Index every message committed past the index's ``upto`` (at most ``limit``), a
        transaction per :attr:`chunk`; how many. Safe beside another indexer of the same
        history (in this process or another): each chunk reads ``upto`` under the index
        file's write lock. ``poll``: first a read of the history alone, and nothing more
        when it holds no message past what this indexer last indexed (the thread's idle
        polls take no lock of the index file)."""
        with self._lock:
            db = self._connect()
            if poll and self._upto is not None:
                (top,) = db.execute("SELECT max(id) FROM history.messages_fold").fetchone()
                if (top or 0) == self._upto:
                    return 0
            done, started, logged = 0, time.monotonic(), False
            while (limit is None or done < limit) and not self._stop.is_set():
                step = self.chunk if limit is None else min(self.chunk, limit - done)
                db.execute("BEGIN IMMEDIATE")
                try:
                    added, behind, upto = self._chunk(db, step)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    self._upto = None
                    raise
                self._upto = upto
                done += added
                if behind > LOG_BEHIND and not logged:
                    log.info("history: index file %s is %d messages behind; catching up",
                             self.path, behind)
                    logged = True
                if added < step:
                    break
            if logged:
                log.info("history: index file caught up (%d messages in %.0f s)",
                         done, time.monotonic() - started)
            self.indexed += done
            return done

    def _chunk(self, db: sqlite3.Connection, step: int) -> tuple[int, int, int]:
        """One chunk in ``db``'s transaction: (messages indexed, messages that were
        behind, the index's ``upto`` after it)."""
        (token,) = db.execute("SELECT token FROM history.history_identity").fetchone()
        (top,) = db.execute("SELECT max(id) FROM history.messages_fold").fetchone()
        top = top or 0
        state = db.execute("SELECT history, upto FROM index_state").fetchone()
        if state is None or state[0] != token or state[1] > top:
            if state is not None:
                log.warning("history: index file %s is not this history's (or is ahead "
                            "of it: a history restored from a backup); filling it again",
                            self.path)
            db.execute("INSERT INTO messages_text (messages_text) VALUES ('delete-all')")
            db.execute("DELETE FROM facets")
            for _, link, _, days in KINDS:
                db.execute(f"DELETE FROM {link}")  # noqa: S608 - names of this module
                db.execute(f"DELETE FROM {days}")  # noqa: S608
            db.execute("INSERT OR REPLACE INTO index_state (one, history, upto) VALUES (1, ?, 0)",
                       (token,))
            upto = 0
        else:
            upto = state[1]
        (last, count) = db.execute(
            "SELECT max(id), count(*) FROM (SELECT id FROM history.messages_fold"
            " WHERE id > ? ORDER BY id LIMIT ?)", (upto, step)).fetchone()
        if not count:
            return 0, 0, upto
        for kind, column in FACETS:
            db.execute(f"INSERT OR IGNORE INTO facets (kind, name) SELECT DISTINCT ?, {column}"  # noqa: S608
                       " FROM history.messages WHERE id > ? AND id <= ?", (kind, upto, last))
        db.execute(_ADD_TEXT, (textindex.FACET_GLOB, upto, last))
        names = ("FROM history.message_names WHERE message_id > ? AND message_id <= ?"
                 " AND kind = ?")
        for kind, link, key, days in KINDS:
            db.execute(f"INSERT OR IGNORE INTO {link} ({key}, timestamp, message_id)"
                       f" SELECT name_id, timestamp, message_id {names}", (upto, last, kind))
            db.execute(f"INSERT INTO {days} (day, {key}, messages)"
                       f" SELECT {DAY.format(ts='timestamp')}, name_id, COUNT(*) {names}"
                       f" GROUP BY 1, 2 ON CONFLICT (day, {key})"
                       " DO UPDATE SET messages = messages + excluded.messages",
                       (upto, last, kind))
        db.execute("UPDATE index_state SET upto = ?", (last,))
        return count, top - upto, last

    # -- the thread --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Index in a thread until :meth:`stop`."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="history-index",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New messages were committed: index them now, not at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(self.poll if not failures else min(30.0, self.poll * 2 ** failures))
            self._wake.clear()
            try:
                self.catch_up(poll=True)
            except Exception as exc:  # a full disk, a locked file: searches lag, ingest goes on
                failures += 1
                self.error = str(exc)
                log.warning("history: index file %s: %s (retrying)", self.path, exc)
            else:
                failures, self.error = 0, None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after the chunk it is in)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join(timeout)
            if not thread.is_alive():
                self._stop.clear()

    def close(self) -> None:
        """Stop the thread and close the index file."""
        self.stop()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
