"""Versioned plain SQL migrations for the history database.

Why plain files and not Alembic: the schema is small and written by hand per backend
(SQLite's FTS5 and PostgreSQL's tsvector/trigram indexes have no common ORM form),
busgate uses no ORM, and a numbered ``NNN_name.sql`` per backend is readable by an
operator, reviewable in a diff and applied with no extra dependency. Each file runs
(with its Python step, :data:`SQLITE_STEPS`, where SQL cannot do the work) in one
transaction together with the row that records it in ``history_migrations``,
so a crash leaves the database at the previous version; a database newer than this
busgate is refused rather than written. On PostgreSQL each step also holds a
transaction-scoped advisory lock (:data:`PG_LOCK`), so two processes starting at once
(``busgate record`` and ``busgate web``) migrate one after the other, the second finding
the work done.
"""

from __future__ import annotations

import importlib
import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

_NAME = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")
log = logging.getLogger(__name__)
#: Milliseconds a process opening the history waits for another's migration to end
#: before it gives up. Why not the writer's usual 30 s: a rebuild (006) holds the write
#: lock about 45 s a million messages, and ``busgate web`` and ``busgate record``
#: started together would have the second fail with "database is locked", an exit
#: systemd does not restart.
MIGRATION_WAIT_MS = 15 * 60 * 1000
#: SQLite migrations (by version) that need Python after their SQL, in the same
#: transaction: "module:function", called with the connection. 007 fills the folded
#: texts (the text index's source since 008) from the stored envelopes
#: (``records.text_of``, which SQL cannot run).
SQLITE_STEPS = {7: "gateway.history.textindex:rebuild"}


class MigrationError(Exception):
    """The history database cannot be brought to this busgate's schema."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(backend: str) -> list[Migration]:
    """The migrations shipped for ``backend`` (``sqlite``, ``postgres``), in version
    order."""
    folder = resources.files("gateway.history") / "migrations" / backend
    found = []
    for entry in folder.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if not versions or versions[0] != 1 or len(set(versions)) != len(versions):
        raise MigrationError(f"history migrations for {backend} must start at 001 and "
                             "have unique numbers")
    return found


def latest(backend: str) -> int:
    return migrations(backend)[-1].version


def apply_sqlite(db: sqlite3.Connection) -> int:
    """Bring ``db`` (autocommit connection) to the newest schema; return its version.

    Numbers are unique but may have gaps, and each file is applied when its own number
    is not yet recorded (not "everything above the highest"): features developed side by
    side take fixed numbers (002 activity, 003 stats, ...), so a database may meet them
    in any order. A file therefore must not depend on a higher-numbered one."""
    (usual,) = db.execute("PRAGMA busy_timeout").fetchone()
    db.execute(f"PRAGMA busy_timeout={MIGRATION_WAIT_MS}")
    try:
        version, upgraded = _apply_sqlite(db)
        if upgraded:
            # an upgrade may have written the whole messages table into the write-ahead
            # log (006): copy it back and cut the log to nothing, rather than keep a log
            # file of the table's size until the last connection closes. Not waiting
            # for readers: one still reading leaves the log as it is, as any checkpoint
            db.execute("PRAGMA busy_timeout=0")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return version
    finally:
        db.execute(f"PRAGMA busy_timeout={int(usual)}")


def _apply_sqlite(db: sqlite3.Connection) -> tuple[int, bool]:
    """:func:`apply_sqlite`'s work: the version, and whether an existing database was
    upgraded."""
    db.execute("CREATE TABLE IF NOT EXISTS history_migrations ("
               "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)")
    wanted = migrations("sqlite")
    applied = {row[0] for row in db.execute("SELECT version FROM history_migrations")}
    unknown = applied - {m.version for m in wanted}
    if unknown:
        raise MigrationError(f"the history database has schema version {max(unknown)}, newer "
                             f"than this busgate ({wanted[-1].version}); upgrade busgate")
    for migration in (m for m in wanted if m.version not in applied):
        db.execute("BEGIN IMMEDIATE")
        try:
            done = db.execute("SELECT 1 FROM history_migrations WHERE version = ?",
                              (migration.version,)).fetchone()
            if not done:  # another process applied it while we waited for the lock
                # an upgrade says so first: a rebuild (006) holds the database a while
                say = log.info if applied else log.debug
                say("history: applying %s to %s", migration.name, _file_of(db))
                began = time.monotonic()
                for statement in _statements(migration.sql):
                    db.execute(statement)
                step = SQLITE_STEPS.get(migration.version)
                if step is not None:
                    module, _, function = step.partition(":")
                    getattr(importlib.import_module(module), function)(db)
                db.execute("INSERT INTO history_migrations VALUES (?, ?, ?)",
                           (migration.version, migration.name, time.time()))
                say("history: %s applied in %.1f s", migration.name,
                    time.monotonic() - began)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return wanted[-1].version, bool(applied) and applied != {m.version for m in wanted}


def _file_of(db: sqlite3.Connection) -> str:
    return next((row[2] for row in db.execute("PRAGMA database_list") if row[1] == "main"),
                "the history database")


def missing_sqlite(db: sqlite3.Connection) -> tuple[list[str], list[int]]:
    """Without writing: (this busgate's migrations not applied to ``db``, versions applied
    that this busgate does not know). A read-only user checks this instead of migrating."""
    try:
        applied = {row[0] for row in db.execute("SELECT version FROM history_migrations")}
    except sqlite3.OperationalError:  # not a history database, or never migrated
        applied = set()
    wanted = migrations("sqlite")
    return ([m.name for m in wanted if m.version not in applied],
            sorted(applied - {m.version for m in wanted}))


#: pg_advisory_xact_lock key of history migrations (any constant: "busgate history").
PG_LOCK = 0x6275736768697374
_PG_TABLE = ("CREATE TABLE IF NOT EXISTS history_migrations (version INTEGER PRIMARY KEY,"
             " name TEXT NOT NULL, applied DOUBLE PRECISION NOT NULL)")


def apply_postgres(conn: psycopg.Connection[Any],
                   wanted: list[Migration] | None = None) -> int:
    """Bring the database of ``conn`` (autocommit) to the newest schema; return its
    version. Same rule as :func:`apply_sqlite` (each file applied when its own number
    is not recorded). ``wanted``: the migrations to apply (default: the shipped ones)."""
    import psycopg

    wanted = migrations("postgres") if wanted is None else wanted
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK,))
        conn.execute(_PG_TABLE)
        applied = {row[0] for row in conn.execute("SELECT version FROM history_migrations")}
    unknown = applied - {m.version for m in wanted}
    if unknown:
        raise MigrationError(f"the history database has schema version {max(unknown)}, newer "
                             f"than this busgate ({wanted[-1].version}); upgrade busgate")
    for migration in (m for m in wanted if m.version not in applied):
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK,))
                done = conn.execute("SELECT 1 FROM history_migrations WHERE version = %s",
                                    (migration.version,)).fetchone()
                if not done:  # another process applied it while we waited for the lock
                    conn.execute(migration.sql.encode())  # several statements: no parameters
                    conn.execute("INSERT INTO history_migrations VALUES (%s, %s, %s)",
                                 (migration.version, migration.name, time.time()))
        except psycopg.Error as exc:
            raise MigrationError(f"{migration.name}: {_pg_reason(exc)}") from None
    return wanted[-1].version


def _pg_reason(exc: Exception) -> str:
    """The server's complaint, with what to do when it is about an extension."""
    text = str(exc).strip()
    for name in ("pg_trgm", "btree_gin"):  # not installed ("control file"), or no right
        if name in text:
            text += (f"; the PostgreSQL history needs the {name} extension: install "
                     "PostgreSQL's contrib modules (Debian: postgresql-contrib) on the server "
                     "and let the database's owner create it (or run CREATE EXTENSION "
                     f"{name} as a superuser)")
    return text


def _statements(sql: str) -> list[str]:
    """The statements of a migration file (``executescript`` would commit on its own)."""
    text = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    out, buf = [], ""
    for part in text.split(";"):
        buf += part
        if sqlite3.complete_statement(buf + ";"):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
        else:
            buf += ";"
    return out
