"""The SQLite history's ``contains`` index in a file of its own, filled behind the
recorder by a thread of its own (``008_text_file.sql``).

Why: at 1,000,000 stored messages the text index was a third of what a batch cost the
recorder, and a second file has a write lock of its own. The recorder commits a batch
(the message, its links, its folded text in ``messages_fold``) and goes on to the
next; :class:`TextIndexer` meanwhile copies the new folded texts into the FTS5 table
with one ``INSERT ... SELECT`` per chunk, inside SQLite, which lets go of Python's GIL
while it runs: the two work on both cores at once. At 1,000,000 stored, the recorder
end to end (bench/recorder_cpu.py) stored x1.49 the messages a second (7,657 against
5,144), and indexed them as fast.

The file is ``<history>-text`` beside the history (its ``-wal`` and ``-shm`` beside it,
as the history's). It is derived: every text it holds is in ``messages_fold``, so a
missing, foreign or stale one is filled again from there (a million messages in
~40 s). ``text_state`` says which history it belongs to (``history_identity``'s
token) and how far it has got: every message with an id up to ``upto`` is in it.

Readers attach it as ``text`` (the unqualified ``messages_text`` of a query is found
there). A search sees a message once the indexer has it: within ~``POLL_SECONDS`` of
its commit while a recorder runs (:meth:`SqliteHistory.text_lag
<gateway.history.store.SqliteHistory.text_lag>` says how far behind it is). Indexing
the folded text finds what indexing the text would: the trigram tokenizer folds each
character as :func:`~gateway.history.textindex.fold` does, and folding twice changes
nothing (tests/test_history_textfile.py checks every character).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: The history's schema version that moved the text index here (008_text_file.sql).
SINCE = 8
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

#: The index file's tables (``{schema}``: where they are made).
SCHEMA = (
    "CREATE VIRTUAL TABLE {schema}messages_text USING fts5 (body, content = '',"
    " tokenize = 'trigram', detail = none)",
    "INSERT INTO {schema}messages_text (messages_text, rank) VALUES ('automerge', 8)",
    # history: history_identity.token of its history; every messages_fold row up to
    # upto is indexed
    "CREATE TABLE {schema}text_state (one INTEGER PRIMARY KEY CHECK (one = 1),"
    " history TEXT NOT NULL, upto INTEGER NOT NULL)",
)


def text_path(history: Path) -> Path:
    """The index file of the history at ``history``."""
    return Path(f"{history}-text")


def create(history: Path) -> None:
    """Make the index file (empty, belonging to no history yet) if it is missing, so a
    reader can attach it before any indexer ran."""
    db = sqlite3.connect(text_path(history), isolation_level=None, timeout=BUSY_TIMEOUT)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'text_state'").fetchone():
                for statement in SCHEMA:
                    db.execute(statement.format(schema=""))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.close()


def attach(db: sqlite3.Connection, history: Path) -> None:
    """Attach the index file to a reader of the history, read-only, as ``text``; a
    history without one yet (a reader older than any writer) gets an empty index."""
    path = text_path(history)
    if path.exists():
        db.execute("ATTACH DATABASE ? AS text", (f"{path.absolute().as_uri()}?mode=ro",))
        return
    log.warning("history: no text index at %s yet: contains finds nothing until "
                "busgate record runs", path)
    db.execute("ATTACH DATABASE ':memory:' AS text")
    for statement in SCHEMA:
        db.execute(statement.format(schema="text."))


class TextIndexer:
    """Copies new folded texts of one history into its index file: :meth:`catch_up` at
    once, or a thread (:meth:`start`) that does it whenever :meth:`wake` is called or
    :data:`POLL_SECONDS` pass."""

    def __init__(self, history: Path, *, chunk: int = CHUNK, poll: float = POLL_SECONDS):
        self.history = history
        self.path = text_path(history)
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
            db.execute("ATTACH DATABASE ? AS history",
                       (f"{self.history.absolute().as_uri()}?mode=ro",))
            self._db = db
        return self._db

    def catch_up(self, limit: int | None = None, *, poll: bool = False) -> int:
        """Index every text committed past the index's ``upto`` (at most ``limit``), a
        transaction per :attr:`chunk`; how many. Safe beside another indexer of the same
        history (in this process or another): each chunk reads ``upto`` under the index
        file's write lock. ``poll``: first a read of the history alone, and nothing more
        when it holds no text past what this indexer last indexed (the thread's idle
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
                    log.info("history: text index %s is %d messages behind; catching up",
                             self.path, behind)
                    logged = True
                if added < step:
                    break
            if logged:
                log.info("history: text index caught up (%d messages in %.0f s)",
                         done, time.monotonic() - started)
            self.indexed += done
            return done

    def _chunk(self, db: sqlite3.Connection, step: int) -> tuple[int, int, int]:
        """One chunk in ``db``'s transaction: (texts indexed, texts that were behind,
        the index's ``upto`` after it)."""
        (token,) = db.execute("SELECT token FROM history.history_identity").fetchone()
        (top,) = db.execute("SELECT max(id) FROM history.messages_fold").fetchone()
        top = top or 0
        state = db.execute("SELECT history, upto FROM text_state").fetchone()
        if state is None or state[0] != token or state[1] > top:
            if state is not None:
                log.warning("history: text index %s is not this history's (or is ahead "
                            "of it: a history restored from a backup); filling it again",
                            self.path)
            db.execute("INSERT INTO messages_text (messages_text) VALUES ('delete-all')")
            db.execute("INSERT OR REPLACE INTO text_state (one, history, upto) VALUES (1, ?, 0)",
                       (token,))
            upto = 0
        else:
            upto = state[1]
        (last, count) = db.execute(
            "SELECT max(id), count(*) FROM (SELECT id FROM history.messages_fold"
            " WHERE id > ? ORDER BY id LIMIT ?)", (upto, step)).fetchone()
        if not count:
            return 0, 0, upto
        db.execute("INSERT INTO messages_text (rowid, body) SELECT id, text"
                   " FROM history.messages_fold WHERE id > ? AND id <= ?", (upto, last))
        db.execute("UPDATE text_state SET upto = ?", (last,))
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
        self._thread = threading.Thread(target=self._run, name="history-text-index",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New texts were committed: index them now, not at the next poll."""
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
                log.warning("history: text index %s: %s (retrying)", self.path, exc)
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
