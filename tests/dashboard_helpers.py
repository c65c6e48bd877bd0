"""Dashboard tests' helpers: realistic messages (the adapters' golden events), a history
filled with them, and a real ``busgate web`` (uvicorn) over it."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import uvicorn

from gateway import sources
from gateway.history.records import record_of
from gateway.history.store import SqliteHistory
from gateway.history.web import make_app
from gateway.messages import TypeIndex
from tests.conftest import REPO, free_port


@cache
def index() -> TypeIndex:
    """The shipped sources' message types (real summaries and links)."""
    return sources.type_index(None)


@cache
def samples() -> list[tuple[str, dict[str, Any]]]:
    """(topic, body) of every event the adapters' golden files expect."""
    out = []
    for path in sorted((REPO / "fixtures" / "golden").glob("*/*.expected.json")):
        data = json.loads(path.read_text("utf-8"))
        events = data.get("events", []) if isinstance(data, dict) else data
        out += [(event["topic"], event["body"]) for event in events]
    assert len(out) > 40, "the golden fixtures have moved"
    return out


def msg_id(number: int) -> str:
    return f"2026-00000000-0000-4000-9000-{number:012d}"


def envelope(number: int, topic: str, body: dict[str, Any], stamp: float,
             users: tuple[str, ...] = (), packages: tuple[str, ...] = ()) -> dict[str, Any]:
    headers: dict[str, Any] = {"fedora_messaging_severity": 20,
                               "sent-at": dt.datetime.fromtimestamp(int(stamp),
                                                                    dt.UTC).isoformat()}
    headers.update({f"fedora_messaging_user_{u}": True for u in users})
    headers.update({f"busgate_package_{p}": True for p in packages})
    return {"topic": topic, "msg": body, "msg_id": msg_id(number), "timestamp": int(stamp),
            "i": 1, "username": "busgate", "seq_id": number, "publisher": "dashboard-test",
            "headers": headers}


def add(store: SqliteHistory, *envelopes: dict[str, Any]) -> None:
    """Store as the recorder does (one transaction on the store's writer)."""
    store.add_many(record_of(e, index()) for e in envelopes)


def seed(store: SqliteHistory, count: int, now: float, span: float = 7 * 86400,
         first: int = 1) -> None:
    """``count`` golden events spread over the ``span`` seconds before ``now``."""
    events = samples()
    add(store, *(envelope(first + i, *events[i % len(events)],
                          now - span + (i + 0.5) * span / count) for i in range(count)))


@contextmanager
def serve(store: SqliteHistory, **options: float) -> Iterator[str]:
    """A real uvicorn over ``store`` on a free loopback port (live polls every 0.1 s
    unless told); yields its base URL."""
    options.setdefault("poll", 0.1)
    port = free_port()
    app = make_app(store, index(), **options)
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=port,
        log_level="warning", timeout_graceful_shutdown=1))
    closing = server.shutdown

    async def shutdown(sockets=None):  # type: ignore[no-untyped-def]
        await app.state.streams.stop()  # as busgate web does
        await closing(sockets)

    server.shutdown = shutdown  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
