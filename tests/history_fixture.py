"""A small fixture history (own data) and a real ``busgate web`` server over it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from gateway.history import textindex
from gateway.history.records import record_of
from gateway.history.store import HistoryStore, SqliteHistory
from gateway.history.web import make_app
from gateway.messages import TypeIndex
from tests.conftest import free_port

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()
HOUR = 3600
PREFIX = "org.debian.dev"

#: (number, hours after T0, topic tail, users, packages, body)
MESSAGES: list[tuple[int, int, str, list[str], list[str], dict[str, Any]]] = [
    (1, 0, "dak.upload.accepted", ["guillem"], ["dpkg"],
     {"source": "dpkg", "maintainer": "guillem"}),
    (2, 1, "debbugs.bug.open", ["jorg"], ["hebcal"],
     {"title": "déjà vu crash", "package": "hebcal"}),
    (3, 2, "dak.upload.accepted", ["jorg"], ["hebcal"],
     {"source": "hebcal", "maintainer": "Jörg"}),
    (4, 3, "wanna-build.build.failed", [], ["dpkg"], {"package": "dpkg", "arch": "armhf"}),
    (5, 4, "git.push", ["guillem", "jorg"], [], {"repo": "dpkg.git", "note": "100% done_ok"}),
    (6, 5, "debbugs.bug.close", ["guillem"], ["dpkg"],
     {"title": "Closes dpkg bug", "package": "dpkg"}),
]


def msg_id(number: int) -> str:
    return f"2026-00000000-0000-4000-8000-{number:012d}"


def envelope(number: int, hours: float, tail: str, users: list[str], packages: list[str],
             body: dict[str, Any]) -> dict[str, Any]:
    stamp = int(T0 + hours * HOUR)
    headers: dict[str, Any] = {"fedora_messaging_schema": "base.message",
                               "fedora_messaging_severity": 20,
                               "sent-at": dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat()}
    headers.update({f"fedora_messaging_user_{u}": True for u in users})
    headers.update({f"busgate_package_{p}": True for p in packages})
    return {"topic": f"{PREFIX}.{tail}", "msg": body, "msg_id": msg_id(number),
            "timestamp": stamp, "i": number, "username": "busgate", "seq_id": number,
            "publisher": "fixture", "headers": headers}


def build(path: Path) -> SqliteHistory:
    store = SqliteHistory(path)
    fill(store)
    return store


def fill(store: HistoryStore) -> HistoryStore:
    """``store`` with :data:`MESSAGES` added (any backend)."""
    store.add_many(record_of(envelope(*m), TypeIndex(())) for m in MESSAGES)
    return store


@contextmanager
def serve(store: HistoryStore, **limits: int) -> Iterator[str]:
    """A real uvicorn server over ``store`` on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(store, **limits), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def add_as_v1(db: Any, record: Any) -> None:
    """Store ``record`` as the first busgate history wrote it (row, names, links, text),
    in plain SQL: a database not migrated past what a test needs is written without
    this busgate's store, which expects every migration."""
    cursor = db.execute(
        "INSERT INTO messages (msg_id, topic, category, timestamp, publisher, seq_id,"
        " envelope) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (record.msg_id, record.topic, record.category, record.timestamp, record.publisher,
         record.seq_id, record.envelope))
    message_id = cursor.lastrowid
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    for kind, (table, link, key, names) in enumerate((
            ("users", "user_messages", "user_id", record.users),
            ("packages", "package_messages", "package_id", record.packages))):
        for name in names:
            db.execute(f"INSERT OR IGNORE INTO {table} (name) VALUES (?)", (name,))
            if "message_names" in tables:  # 008 on: the links are the index file's
                db.execute("INSERT INTO message_names (message_id, kind, name_id, timestamp)"
                           f" SELECT ?, ?, id, ? FROM {table} WHERE name = ?",
                           (message_id, kind, record.timestamp, name))
            else:
                db.execute(f"INSERT INTO {link} ({key}, timestamp, message_id)"
                           f" SELECT id, ?, ? FROM {table} WHERE name = ?",
                           (record.timestamp, message_id, name))
    if "messages_text" in tables:  # before 008: the text index in the history itself
        db.execute("INSERT INTO messages_text (rowid, body) VALUES (?, ?)",
                   (message_id, record.text))
    if "messages_fold" in tables:  # 007 on
        db.execute("INSERT INTO messages_fold (id, text) VALUES (?, ?)",
                   (message_id, textindex.fold(record.text)))
