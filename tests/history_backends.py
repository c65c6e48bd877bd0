"""The history stores tests run against: SQLite in a temp dir, and PostgreSQL in throwaway
databases on the real server (127.0.0.1:5432, user postgres; BUSGATE_TEST_PG* to move it).

Every PostgreSQL database a session makes has a random name and is dropped when the
session ends. Without the server the PostgreSQL cases skip (fail with CI=true).
tests/conftest.py imports the fixtures, so every test module may use them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from fixtures.wannabuild import wbdb
from gateway.history.store import HistoryStore, SqliteHistory

HOW = "start it with: pg_ctlcluster --skip-systemctl-redirect 15 main start"


def url(name: str, schema: str | None = None) -> str:
    base = f"postgresql://{wbdb.ADMIN_USER}@{wbdb.HOST}:{wbdb.PORT}/{name}"
    return f"{base}?options=-csearch_path%3D{schema},public" if schema else base


def _create(name: str) -> None:
    with wbdb.admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Callable[..., str]]:
    """Factory: the URL of a new, empty history place. By default a schema of its own in
    the session's one throwaway database (pg_trgm and btree_gin made there once, in
    ``public``): a DROP DATABASE forces a checkpoint, slow on a busy server, so the
    session drops one.
    ``database=True``: a database of its own (for tests that lock it or need it bare).
    Every name is random; all are dropped at the end."""
    from conftest import require_server

    require_server("PostgreSQL", wbdb.PORT, HOW, wbdb.HOST)
    made: list[str] = []

    def new(database: bool = False) -> str:
        name = f"busgate_hist_{os.getpid()}_{secrets.token_hex(4)}"
        if database:
            _create(name)
            made.append(name)
            return url(name)
        if not made:  # the session's shared database
            _create(name)
            made.append(name)
            with psycopg.connect(wbdb.dsn(name), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION pg_trgm")
                conn.execute("CREATE EXTENSION btree_gin")  # 011's, shared like pg_trgm
        schema = f"s_{secrets.token_hex(4)}"
        with psycopg.connect(wbdb.dsn(made[0]), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        return url(made[0], schema)

    yield new
    for name in made:
        wbdb.drop(name)


def database_of(store: HistoryStore) -> str:
    """What ``--database`` takes for ``store``."""
    return getattr(store, "url", None) or str(store.path)  # type: ignore[attr-defined]


@pytest.fixture(scope="module", params=["sqlite",
                                        pytest.param("postgresql", marks=pytest.mark.postgres)])
def history_store(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Factory over both backends: ``history_store(**kw)`` is a new empty store
    (``.backend`` says which); all are closed at the end of the module."""
    opened: list[HistoryStore] = []

    def make(**kw: Any) -> HistoryStore:
        store: HistoryStore
        if request.param == "sqlite":
            store = SqliteHistory(tmp_path_factory.mktemp("history") / "h.sqlite", **kw)
        else:
            from gateway.history.pgstore import PostgresHistory

            store = PostgresHistory(request.getfixturevalue("pg_databases")(), **kw)
        opened.append(store)
        return store

    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for store in opened:
        store.close()
