"""The state database: one SQLite file in WAL mode.

It holds the outbox (the log every event is published from), poller cursors
and snapshots, source facts, quarantined inputs and counters. Whatever a source is
acknowledged for is committed here (or in the spool) first.

The outbox gives each new event key the next ``seq_id`` inside the inserting
transaction, so sequence numbers are contiguous, survive restarts and are never
reused; a key seen before adds nothing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import dedup, pruned_keys
from gateway import envelope as env
from gateway.envelope import EnvelopeFactory  # moved there; this import path still works
from gateway.errors import StateLostError, StoreError
from gateway.event import Event

SCHEMA_VERSION = 4
#: v3: ``uid`` is no longer UNIQUE on its own: gateway/dedup.py's index and filters keep
#: it unique (a v1/v2 outbox is rebuilt once by the migration, see :meth:`Store._migrate`).
#: v4: pruned keys by run (gateway/pruned_keys.py), copied from the v2/v3 table.
OUTBOX_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    seq_id    INTEGER PRIMARY KEY,
    uid       BLOB NOT NULL,  -- uuid5 of the key: the event's identity (dedup)
    key       TEXT NOT NULL,
    msg_id    TEXT NOT NULL,
    topic     TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    envelope  TEXT NOT NULL
);
"""
SCHEMA = OUTBOX_TABLE.format(name="outbox") + """
CREATE INDEX IF NOT EXISTS outbox_timestamp ON outbox (timestamp);
CREATE TABLE IF NOT EXISTS cursors (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    id       INTEGER PRIMARY KEY,
    kind     TEXT NOT NULL,
    reason   TEXT NOT NULL,
    error    TEXT NOT NULL,
    origin   TEXT NOT NULL,
    created  INTEGER NOT NULL,
    raw      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
""" + """
-- v2: what one feed of a source already reported, for another feed of it (e.g. a bug
-- closed by mail, so the SOAP poller stays silent about it); written with the event
-- that carries the fact, consumed (deleted) by the poller that used it.
CREATE TABLE IF NOT EXISTS source_facts (
    namespace TEXT NOT NULL,
    subject   TEXT NOT NULL,
    fact      TEXT NOT NULL,
    recorded  REAL NOT NULL,
    PRIMARY KEY (namespace, subject, fact)
) WITHOUT ROWID;
""" + dedup.SCHEMA + pruned_keys.SCHEMA

#: Page size of a new state database. An outbox row of a real dak event is ~2.4 KB:
#: one row a 4 KiB page (SQLite's default) left 40% of every page empty, which the WAL
#: wrote, checksummed and checkpointed anyway. 16 KiB pages hold six such rows: commits
#: of bulk input take ~1/3 less CPU and the file is ~40% smaller. Existing databases keep
#: theirs (a WAL database cannot change it short of a rebuild).
PAGE_SIZE = 16384

PUBLISHED_CURSOR = "publisher.sent"
#: The AMQP publisher's cursor: the highest seq_id the broker confirmed with all before it.
AMQP_CURSOR = "publisher.amqp.sent"
#: Highest seq_id removed by outbox retention (0: nothing pruned); replay answers from it.
PRUNED_CURSOR = "outbox.pruned_seq_id"
#: Random id made once with the database: subscribers see a wiped state as a new epoch.
EPOCH_CURSOR = "publisher.epoch"


@dataclass(frozen=True)
class OutboxRow:
    seq_id: int
    topic: str
    envelope: str


#: SQLite result codes meaning the file is not (or no longer) a usable database.
_LOST_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def state_error(what: str, exc: BaseException) -> StoreError:
    """A :class:`StoreError` for a failed SQLite call: :class:`StateLostError` when the file
    is corrupt or not a database (retrying cannot help), else a plain one (disk full,
    read-only, I/O error: worth backing off and retrying)."""
    code = getattr(exc, "sqlite_errorcode", None)
    lost = code is not None and code & 0xFF in _LOST_CODES
    return (StateLostError if lost else StoreError)(f"{what}: {exc}")


class Store:
    def __init__(self, path: str | Path, factory: EnvelopeFactory | None = None, *,
                 create: bool = True):
        self.path = Path(path)
        self.factory = factory
        #: ``False``: open an existing database only (a restarted spool worker must not
        #: create a new file that the publisher, holding the old one, never reads).
        self.create = create
        #: (st_dev, st_ino) of the file when first opened; see :meth:`verify`.
        self.identity: tuple[int, int] | None = None
        self._local = threading.local()
        self._init_lock = threading.Lock()
        self._initialised = False
        #: this process's copy of the dedup filters (gateway/dedup.py)
        self.filters = dedup.Filters()
        self.connect()
        if factory is not None:
            factory.epoch = self.epoch()

    # -- connections -------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections are not shared across threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        memory = str(self.path) == ":memory:"
        try:
            # Only the first connection may create the file: a thread connecting later (a
            # cursor write in a new executor thread) would make a new, empty database
            # where the one opened was deleted, which nobody reads.
            if memory or (self.create and self.identity is None):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            else:
                conn = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=rw", uri=True,
                                       timeout=30.0, isolation_level=None)
            # Only a new file takes it (before its first write; WAL fixes it after).
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: big batches insert into hot pages
            with self._init_lock:
                if not self._initialised:
                    self._migrate(conn)
                    self._initialised = True
                    if not memory:
                        stat = os.stat(self.path)
                        self.identity = (stat.st_dev, stat.st_ino)
        except sqlite3.Error as exc:
            raise state_error(f"cannot open state database {self.path}", exc) from exc
        except OSError as exc:
            raise StoreError(f"cannot open state database {self.path}: {exc}") from exc
        self._local.conn = conn
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}, newer than this "
                             f"busgate ({SCHEMA_VERSION}); upgrade busgate")
        if version == SCHEMA_VERSION:
            return  # nothing to write: a read-only database can still be read (status)
        # One transaction: a new file gets every table, an old file its new ones (v1 -> v2:
        # ``source_facts``; v2 -> v3: the outbox rebuilt without its UNIQUE uid, the
        # per-run uid index, the filters of its complete runs; v3 -> v4: the pruned keys
        # by run, and the filters of their runs again), and a crash or a full disk
        # leaves the old version whole. The version is read again under the write lock,
        # so two processes opening an old file at once migrate it once.
        try:
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                rebuilt = _rebuild_outbox(conn)
                old_keys = pruned_keys.detach_v3(conn)
                for statement in _statements(SCHEMA):
                    conn.execute(statement)
                if old_keys:
                    pruned_keys.copy_v3(conn)
                    # v3 dropped the filters of pruned runs: seal every run again
                    conn.execute("DELETE FROM dedup_filters")
                if rebuilt or old_keys:  # one sequential pass now, not in the first commit
                    dedup.seal(conn, dedup.run_of(self._last_seq(conn) + 1))
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("INSERT OR IGNORE INTO cursors (name, value) VALUES (?, ?)",
                             (EPOCH_CURSOR, uuid.uuid4().hex))
            conn.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _last_seq(conn: sqlite3.Connection) -> int:
        return conn.execute("SELECT MAX(seq_id) FROM outbox").fetchone()[0] or 0

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        self.filters.clear()

    def verify(self) -> None:
        """Raise :class:`StateLostError` if the file opened is no longer at :attr:`path`
        (deleted or replaced while open: writes would go to a file no one reads)."""
        if self.identity is None:
            return
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise StateLostError(f"the state database {self.path} was deleted while busgate "
                                 "was using it") from None
        except OSError as exc:
            raise StoreError(f"cannot stat the state database {self.path}: {exc}") from exc
        if (stat.st_dev, stat.st_ino) != self.identity:
            raise StateLostError(f"the state database {self.path} was replaced by another "
                                 "file while busgate was using it")

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction (``BEGIN IMMEDIATE``): all of it commits, or none.
        SQLite failures come out as :class:`StoreError` (see :func:`state_error`)."""
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise state_error(f"cannot write {self.path}", exc) from exc
        tx = Transaction(self, conn)
        try:
            yield tx
        except BaseException as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise state_error(f"cannot write {self.path}", exc) from exc
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise state_error(f"cannot commit to {self.path}", exc) from exc

    # -- reads ---------------------------------------------------------------------------
    def last_seq_id(self) -> int:
        row = self.connect().execute("SELECT MAX(seq_id) FROM outbox").fetchone()
        return row[0] or 0

    def cursor(self, name: str) -> str | None:
        row = self.connect().execute("SELECT value FROM cursors WHERE name = ?",
                                     (name,)).fetchone()
        return row[0] if row else None

    def epoch(self) -> str:
        """This database's publisher epoch (made when the database was created)."""
        return self.cursor(EPOCH_CURSOR) or ""

    def published_seq_id(self) -> int:
        return int(self.cursor(PUBLISHED_CURSOR) or 0)

    def sent_floor(self) -> int:
        """The highest seq_id EVERY transport has published (``publisher.sent`` and any
        ``publisher.<transport>.sent``): rows above it must stay for a transport."""
        row = self.connect().execute(
            "SELECT MIN(CAST(value AS INTEGER)) FROM cursors"
            " WHERE name GLOB 'publisher.*.sent'").fetchone()
        zmq = self.published_seq_id()  # 0 until ZeroMQ's first batch is recorded
        return zmq if row[0] is None else min(zmq, int(row[0]))

    def pruned_seq_id(self) -> int:
        """Highest seq_id outbox retention removed (0: none); replay says so."""
        return int(self.cursor(PRUNED_CURSOR) or 0)

    def pruned_uids(self, uids: list[bytes]) -> set[bytes]:
        """Which of ``uids`` belong to pruned rows (still remembered for dedup)."""
        conn = self.connect()
        return dedup.present(conn, uids, dedup.pruned_runs(conn), table="pruned_uids")

    def rows_after(self, seq_id: int, limit: int = 1000) -> list[OutboxRow]:
        rows = self.connect().execute(
            "SELECT seq_id, topic, envelope FROM outbox WHERE seq_id > ? ORDER BY seq_id LIMIT ?",
            (seq_id, limit),
        ).fetchall()
        return [OutboxRow(*r) for r in rows]

    def frames_after(self, seq_id: int, limit: int = 1000) -> list[tuple[int, bytes, bytes]]:
        """``(seq_id, topic, envelope)`` after ``seq_id``, the texts as the UTF-8 bytes
        stored: the ZeroMQ frames as they are, with no str made and encoded again."""
        return self.connect().execute(
            "SELECT seq_id, CAST(topic AS BLOB), CAST(envelope AS BLOB) FROM outbox"
            " WHERE seq_id > ? ORDER BY seq_id LIMIT ?", (seq_id, limit)).fetchall()

    def envelopes(self, where: str, params: Iterable[Any], limit: int) -> list[str]:
        """Stored envelopes matching a fixed SQL condition, in seq_id order (replay)."""
        sql = f"SELECT envelope FROM outbox WHERE {where} ORDER BY seq_id LIMIT ?"  # noqa: S608
        return [r[0] for r in self.connect().execute(sql, (*params, limit))]

    def iter_envelopes(self, where: str, params: Iterable[Any],
                       limit: int) -> Iterator[tuple[int, str]]:
        """Like :meth:`envelopes`, one ``(seq_id, envelope)`` at a time (bounded replies)."""
        sql = f"SELECT seq_id, envelope FROM outbox WHERE {where} ORDER BY seq_id LIMIT ?"  # noqa: S608
        yield from self.connect().execute(sql, (*params, limit))

    def counters(self) -> dict[str, int]:
        return dict(self.connect().execute("SELECT name, value FROM counters ORDER BY name"))

    def quarantined(self, ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        conn = self.connect()
        columns = "id, kind, reason, error, origin, created, raw"
        if ids is None:
            rows = conn.execute(f"SELECT {columns} FROM quarantine ORDER BY id").fetchall()  # noqa: S608
        else:
            wanted = list(ids)
            marks = ",".join("?" * len(wanted))
            rows = conn.execute(
                f"SELECT {columns} FROM quarantine WHERE id IN ({marks}) ORDER BY id",  # noqa: S608
                wanted,
            ).fetchall()
        keys = ("id", "kind", "reason", "error", "origin", "created", "raw")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def quarantine_counts(self) -> dict[str, int]:
        return dict(self.connect().execute(
            "SELECT reason, COUNT(*) FROM quarantine GROUP BY reason ORDER BY reason"))

    def has_key(self, key: str) -> bool:
        """Whether an event with this source key is already in the outbox."""
        return self.connect().execute(
            f"SELECT 1 FROM outbox WHERE {dedup.UID_MATCH}",  # noqa: S608
            (env.event_uid(key),)).fetchone() is not None

    def facts(self, namespace: str) -> dict[str, dict[str, float]]:
        """``source_facts`` of one namespace: subject -> {fact: when recorded}."""
        found: dict[str, dict[str, float]] = {}
        for subject, fact, recorded in self.connect().execute(
                "SELECT subject, fact, recorded FROM source_facts WHERE namespace = ?",
                (namespace,)):
            found.setdefault(subject, {})[fact] = recorded
        return found

    def snapshot(self, namespace: str, key: str) -> str | None:
        row = self.connect().execute(
            "SELECT value FROM snapshots WHERE namespace = ? AND key = ?", (namespace, key)
        ).fetchone()
        return row[0] if row else None

    def snapshots(self, namespace: str) -> dict[str, str]:
        return dict(self.connect().execute(
            "SELECT key, value FROM snapshots WHERE namespace = ?", (namespace,)))

    def transport_cursors(self, last: int | None = None,
                          enabled: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """Each ``enabled`` transport's cursor and lag (``None``: ZeroMQ's, and AMQP's once
        it has published)."""
        last = self.last_seq_id() if last is None else last
        amqp = self.cursor(AMQP_CURSOR)
        if enabled is None:
            enabled = ("zmq", "amqp") if amqp is not None else ("zmq",)
        result = {}
        for name in enabled:
            at = self.published_seq_id() if name == "zmq" else int(amqp or 0)
            result[name] = {"cursor": at, "lag": last - at}
        return result

    def status(self, enabled: Sequence[str] | None = None) -> dict[str, Any]:
        """What ``busgate status`` shows. ``published_seq_id`` (and so ``outbox_depth``)
        is where the slowest ``enabled`` transport stands: a disabled one holds nothing
        back (``None``: ZeroMQ's cursor)."""
        last = self.last_seq_id()
        transports = self.transport_cursors(last, enabled)
        published = min((t["cursor"] for t in transports.values()), default=last) \
            if enabled is not None else self.published_seq_id()
        return {
            "database": str(self.path),
            "last_seq_id": last,
            "published_seq_id": published,
            "outbox_depth": last - published,
            "transports": transports,
            "pruned_seq_id": self.pruned_seq_id(),
            "counters": self.counters(),
            "quarantine": self.quarantine_counts(),
        }


class Transaction:
    """Writes inside :meth:`Store.transaction`."""

    def __init__(self, store: Store, conn: sqlite3.Connection):
        self._store = store
        self._conn = conn
        self._next: int | None = None
        self._last_stamp = 0
        self._dedup = dedup.Pass(conn, store.filters)

    def add_events(self, events: Iterable[Event], now: int | None = None) -> list[int]:
        """Append new events to the outbox; return the seq_ids given (duplicates get none)."""
        factory = self._store.factory
        if factory is None:
            raise StoreError("this store was opened without an envelope factory")
        if self._next is None:
            row = self._conn.execute(
                "SELECT seq_id, timestamp FROM outbox ORDER BY seq_id DESC LIMIT 1").fetchone()
            self._next = (row[0] if row else 0) + 1
            self._last_stamp = row[1] if row else 0
        # never before the previous row: a wall clock stepped back must not make the
        # outbox (and replay by time) run backwards
        stamp = max(int(time.time()) if now is None else now, self._last_stamp)
        self._last_stamp = stamp
        batch = [(env.event_uid(event.key), event) for event in events]
        uids = [uid for uid, _ in batch]
        # A key in a complete run of the outbox, or whose row retention pruned (kept for
        # dedup_days): the filters say which to look up.
        known = self._dedup.known(uids, self._next, len(batch))
        # Duplicates are rare (a redelivered mail, a re-run poll): insert optimistically
        # and only look the keys up when the (per-run) unique index refused the batch.
        self._conn.execute("SAVEPOINT add_events")
        first = self._next
        try:
            given = self._insert(batch, set(known), stamp)
        except sqlite3.IntegrityError:
            self._conn.execute("ROLLBACK TO add_events")
            self._next = first
            given = self._insert(batch, self._known_uids(uids) | known, stamp)
        self._conn.execute("RELEASE add_events")
        return given

    def _insert(self, batch: list[tuple[bytes, Event]], known: set[bytes],
                stamp: int) -> list[int]:
        factory = self._store.factory
        assert factory is not None and self._next is not None
        rows = []
        # Facts of the events added now, never of a duplicate: a redelivered mail must not
        # bring back a fact its poller has consumed since.
        facts: list[tuple[str, str, str]] = []
        todo = []  # events for a signer that signs a batch at once (factory.make_many)
        batched = hasattr(factory.signer, "sign_many")
        for uid, event in batch:
            if uid in known:
                continue
            known.add(uid)  # the same key twice in one batch is stored once
            if event.facts:
                facts += event.facts
            if batched:
                todo.append((event, self._next, uid))
            else:
                topic, msg_id, envelope = factory.make(event, self._next, stamp, uid)
                rows.append((self._next, uid, event.key, msg_id, topic, stamp, envelope))
            self._next += 1
        if todo:
            rows = [(seq, uid, event.key, msg_id, topic, stamp, envelope)
                    for (event, seq, uid), (topic, msg_id, envelope)
                    in zip(todo, factory.make_many(todo, stamp), strict=True)]
        self._conn.executemany(
            "INSERT INTO outbox (seq_id, uid, key, msg_id, topic, timestamp, envelope)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        if facts:
            self._conn.executemany(
                "INSERT OR IGNORE INTO source_facts (namespace, subject, fact, recorded)"
                " VALUES (?, ?, ?, ?)", [(*fact, float(stamp)) for fact in facts])
        return [row[0] for row in rows]

    def _known_uids(self, uids: list[bytes], chunk: int = 500) -> set[bytes]:
        """Which of ``uids`` the outbox already has (one query per ``chunk``)."""
        return dedup.present(self._conn, uids, dedup.all_runs(self._conn), chunk)

    def has_key(self, key: str) -> bool:
        """Whether an event with this source key is already in the outbox (or was, and
        retention pruned it within ``dedup_days``)."""
        uid = env.event_uid(key)
        return self._conn.execute(f"SELECT 1 FROM outbox WHERE {dedup.UID_MATCH}",  # noqa: S608
                                  (uid,)).fetchone() is not None \
            or bool(dedup.present(self._conn, [uid], dedup.pruned_runs(self._conn),
                                  table="pruned_uids"))

    def prune_outbox(self, upto: int, most: int) -> int:
        """Remove outbox rows with seq_id <= ``upto`` (oldest first, at most ``most``),
        never the newest row (seq_id continues from it); remember their uids for dedup.
        Returns how many rows went. The caller bounds ``upto`` by what every transport
        has published (:meth:`Store.sent_floor`)."""
        last = self._conn.execute("SELECT MAX(seq_id) FROM outbox").fetchone()[0] or 0
        done = int(self.cursor(PRUNED_CURSOR) or 0)
        end = min(upto, last - 1, done + most)
        if end <= done:
            return 0
        pruned_keys.move(self._conn, done, end)
        with pruned_keys.fast_delete(self._conn):
            gone = self._conn.execute("DELETE FROM outbox WHERE seq_id > ? AND seq_id <= ?",
                                      (done, end)).rowcount
        self._dedup.stale()
        self.set_cursor(PRUNED_CURSOR, end)
        self.bump("outbox.pruned", gone)
        return gone

    def forget_pruned(self, before: int, keep: int) -> int:
        """Forget pruned uids of events older than ``before`` (epoch seconds), and the
        oldest beyond ``keep`` keys, a run (65,536 seq_ids) at a time: a key is kept at
        least that long, and a run's worth more may be (gateway/pruned_keys.py).
        Returns how many were forgotten."""
        gone = pruned_keys.forget(self._conn, before, keep)
        self._dedup.stale()
        if gone:
            self.bump("outbox.dedup_forgotten", gone)
        return gone

    def add_facts(self, facts: Iterable[tuple[str, str, str]], recorded: float) -> None:
        """Record ``(namespace, subject, fact)`` rows; a fact already there keeps its time."""
        self._conn.executemany(
            "INSERT OR IGNORE INTO source_facts (namespace, subject, fact, recorded)"
            " VALUES (?, ?, ?, ?)", [(*fact, recorded) for fact in facts])

    def consume_facts(self, facts: Iterable[tuple[str, str, str]]) -> None:
        """Delete ``(namespace, subject, fact)`` rows (used up by a poller); absent ones are
        ignored."""
        self._conn.executemany(
            "DELETE FROM source_facts WHERE namespace = ? AND subject = ? AND fact = ?",
            list(facts))

    def delete_cursor(self, name: str) -> None:
        self._conn.execute("DELETE FROM cursors WHERE name = ?", (name,))

    def set_cursor(self, name: str, value: str | int) -> None:
        self._conn.execute(
            "INSERT INTO cursors (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, str(value)),
        )

    def cursor(self, name: str) -> str | None:
        row = self._conn.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def put_snapshot(self, namespace: str, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO snapshots (namespace, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
            (namespace, key, value),
        )

    def delete_snapshot(self, namespace: str, key: str) -> None:
        self._conn.execute("DELETE FROM snapshots WHERE namespace = ? AND key = ?",
                           (namespace, key))

    def quarantine(self, kind: str, raw: bytes, *, error: str, reason: str = "error",
                   origin: str = "") -> int:
        """Keep an input that produced no events; ``reason`` is e.g. error/unrecognized/oversize."""
        cur = self._conn.execute(
            "INSERT INTO quarantine (kind, reason, error, origin, created, raw)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (kind, reason, error, origin, int(time.time()), raw),
        )
        self.bump(f"quarantined.{reason}")
        return int(cur.lastrowid or 0)

    def quarantine_within(self, kind: str, raw: bytes, *, error: str, reason: str,
                          origin: str, max_items: int, max_bytes: int) -> str:
        """:meth:`quarantine` within the ``[quarantine]`` caps. Returns ``kept``;
        ``raw_dropped`` (over ``max_bytes``: the row keeps reason, error and size, not the
        bytes); or ``dropped`` (``max_items`` reached: only counted, the caller logs it)."""
        count, used = self.quarantine_usage()
        if count >= max_items:
            self.bump("quarantine.dropped")
            return "dropped"
        outcome = "kept"
        if used + len(raw) > max_bytes:
            error += (f" [raw input of {len(raw)} bytes not kept: quarantine.max_bytes "
                      f"({max_bytes}) reached]")
            raw = b""
            self.bump("quarantine.raw_dropped")
            outcome = "raw_dropped"
        self.quarantine(kind, raw, error=error, reason=reason, origin=origin)
        return outcome

    def quarantine_usage(self) -> tuple[int, int]:
        """``(items, raw bytes)`` in quarantine, for its caps."""
        count, used = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(raw)), 0) FROM quarantine").fetchone()
        return int(count), int(used)

    def update_quarantine(self, quarantine_id: int, *, error: str, reason: str) -> None:
        self._conn.execute("UPDATE quarantine SET error = ?, reason = ? WHERE id = ?",
                           (error, reason, quarantine_id))

    def release(self, quarantine_id: int) -> None:
        self._conn.execute("DELETE FROM quarantine WHERE id = ?", (quarantine_id,))

    def bump(self, counter: str, n: int = 1) -> None:
        self._conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (counter, n),
        )


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, one at a time (``executescript`` would commit)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip() and not all(part.strip().startswith("--") or not part.strip()
                                   for part in pending.splitlines()):
        raise ValueError(f"incomplete SQL statement: {pending!r}")


def _rebuild_outbox(conn: sqlite3.Connection) -> bool:
    """A v1/v2 outbox (``uid UNIQUE``: a random-key index over every row) copied into a
    v3 one, rows and seq_ids as they were. Returns whether there was one to rebuild."""
    unique = [row for row in conn.execute("PRAGMA index_list(outbox)") if row[3] == "u"]
    if not unique:
        return False
    conn.execute(OUTBOX_TABLE.format(name="outbox_v3"))
    conn.execute("INSERT INTO outbox_v3 (seq_id, uid, key, msg_id, topic, timestamp, envelope)"
                 " SELECT seq_id, uid, key, msg_id, topic, timestamp, envelope FROM outbox"
                 " ORDER BY seq_id")
    conn.execute("DROP TABLE outbox")
    conn.execute("ALTER TABLE outbox_v3 RENAME TO outbox")
    return True
