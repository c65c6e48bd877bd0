"""The state database's page size: new files get :data:`gateway.store.PAGE_SIZE`, old
files keep theirs and stay usable."""

from __future__ import annotations

import sqlite3

from gateway import runtime
from gateway.event import Event
from gateway.store import PAGE_SIZE, Store


def page_size(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA page_size").fetchone()[0]


def add(store: Store, keys: range) -> list[int]:
    with store.transaction() as tx:
        return tx.add_events([Event("logger", "message", "log", key=f"page:{n}",
                                    body={"text": "x" * 2000}) for n in keys])


def test_a_new_state_database_gets_big_pages(make_settings) -> None:
    settings = make_settings()
    store = runtime.open_store(settings)
    conn = store.connect()
    assert add(store, range(100)) == list(range(1, 101))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = settings.db_path.stat().st_size
    assert add(store, range(100, 400))[-1] == 400
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    grown = settings.db_path.stat().st_size - before
    store.close()
    assert PAGE_SIZE == 16384 and page_size(settings.db_path) == PAGE_SIZE
    # ~2.3 KB rows: six to a page, where 4 KiB pages held one
    assert grown / 300 < 3000, grown


def test_an_existing_database_keeps_its_page_size(make_settings) -> None:
    settings = make_settings()
    settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
    first = runtime.open_store(settings)
    assert add(first, range(10)) == list(range(1, 11))
    first.close()
    again = runtime.open_store(settings, create=False)
    assert add(again, range(5, 20)) == list(range(11, 21))  # keys 5-9 stored once
    assert again.last_seq_id() == 20
    again.close()
    assert page_size(settings.db_path) == 4096
