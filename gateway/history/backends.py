"""Which store keeps the history: ``[history] database`` is a path (SQLite, embedded) or a
``postgresql://`` URL (PostgreSQL). One place decides, so ``busgate record``, ``busgate
web``, backfill and the recorder inside ``busgate run`` always agree; psycopg is only
imported when the URL asks for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gateway.history.store import HistoryStore

if TYPE_CHECKING:
    from gateway.config import Settings

#: What a PostgreSQL history's ``database`` starts with (libpq takes both spellings).
URL_SCHEMES = ("postgresql://", "postgres://")
#: The PostgreSQL recorder's position file under ``state.dir`` (``history.position``).
POSITION_FILE = "history-position.sqlite"


def is_url(database: str) -> bool:
    return database.startswith(URL_SCHEMES)


def database_of(settings: Settings, override: str | None = None) -> str:
    """The history's path or URL: ``override`` (``--database``), else ``history.database``,
    else ``<state.dir>/history.sqlite``."""
    return override or settings.history.database or str(settings.history_path)


def open_history_url(database: str, query_timeout: float, create: bool = True, *,
                     pool_size: int = 4, readonly: bool = False, cache_mb: int = 64,
                     count_limit: int = 10_000, count_budget_ms: int | None = None,
                     write_parts: int | None = None) -> HistoryStore:
    """The store at ``database``: PostgreSQL for a ``postgresql://`` URL, else SQLite.
    ``readonly``: a reader that checks the schema instead of migrating it;
    ``count_budget_ms``: how long a ``/raw`` count may run (None: the store's default);
    ``write_parts``: PostgreSQL's concurrent transactions per batch (None: its default)."""
    if is_url(database):
        from gateway.history.pgstore import COUNT_BUDGET_MS, WRITE_PARTS, PostgresHistory

        return PostgresHistory(database, query_timeout=query_timeout, create=create,
                               pool_size=pool_size, readonly=readonly,
                               count_limit=count_limit,
                               count_budget_ms=COUNT_BUDGET_MS if count_budget_ms is None
                               else count_budget_ms,
                               write_parts=WRITE_PARTS if write_parts is None else write_parts)
    from gateway.history.store import COUNT_BUDGET_MS as SQLITE_BUDGET_MS
    from gateway.history.store import SqliteHistory

    return SqliteHistory(database, query_timeout=query_timeout, create=create,
                         readonly=readonly, cache_mb=cache_mb, count_limit=count_limit,
                         count_budget_ms=SQLITE_BUDGET_MS if count_budget_ms is None
                         else count_budget_ms)


def open_history(settings: Settings, *, create: bool = True, database: str | None = None,
                 readonly: bool = False) -> HistoryStore:
    """The store ``[history]`` names (``database`` overrides ``history.database``)."""
    return open_history_url(database_of(settings, database), settings.history.query_timeout,
                            create, pool_size=settings.history.pool_size, readonly=readonly,
                            cache_mb=settings.history.cache_mb,
                            count_limit=settings.history.count_limit,
                            count_budget_ms=settings.history.count_budget_ms,
                            write_parts=settings.history.write_parts)


def position_path(settings: Settings, store: HistoryStore) -> Path:
    """Where the recorder's position commits: in the store's own file when it has one
    (SQLite), else ``history.position`` or ``<state.dir>/history-position.sqlite``."""
    if store.position_path is not None:
        return store.position_path
    return Path(settings.history.position) if settings.history.position \
        else settings.state_dir / POSITION_FILE
