"""The recorder's per-message path in front of the store: what the wire carried is stored
as its canonical JSON whatever the publisher wrote, and a real recorder on a real ZeroMQ
socket stores every message once (no savepoint per message where it writes nothing)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq

from gateway import envelope as env
from gateway.discovery import Endpoint
from gateway.errors import EnvelopeError
from gateway.history import indexfile
from gateway.history.recorder import Recorder
from gateway.history.records import record_of
from gateway.history.store import SqliteHistory
from gateway.messages import TypeIndex
from tests.conftest import free_port

TOPIC = "org.debian.dev.git.branch.push"


def envelope(seq: int, body: Any = None, publisher: str = "ingest") -> dict[str, Any]:
    return {"topic": TOPIC, "msg": {"n": seq} if body is None else body,
            "msg_id": f"2026-00000000-0000-4000-8000-{seq:012d}", "timestamp": 1796000000 + seq,
            "i": seq, "username": "busgate", "seq_id": seq, "publisher": publisher,
            "publisher_epoch": "e1"}


BODIES: list[Any] = [
    {"who": "Jörg", "emoji": "\U0001f600", "del": "a\x7fb", "ctl": "\x00\x1f\n\t\"\\/"},
    {"big": 2 ** 70, "neg": -(2 ** 63), "list": [True, False, None, [], {}]},
    {"float": 1e-05, "also": [0.1, 12345678901234567890.0]},
    {"z": 1, "a": {"y": 2, "b": 3}, "": "empty key"},
    "a body that is only a string",
    [1, "two", {"three": 3}],
]


def frames_of(text: str | bytes) -> list[bytes]:
    return [TOPIC.encode(), text if isinstance(text, bytes) else text.encode()]


@pytest.mark.parametrize("body", BODIES)
def test_a_canonical_frame_is_stored_as_the_same_bytes(body):
    wire = env.canonical_json(envelope(1, body))
    decoded, float_free = env.decode_flagged(frames_of(wire))
    assert float_free == ("float" not in json.dumps(body))
    assert record_of(decoded, TypeIndex(()), float_free=float_free).envelope == wire


@pytest.mark.parametrize("text", [
    # blanks, unsorted keys, raw UTF-8, a duplicate key: the parsed value is what counts
    '{ "topic": "@T@", "msg": {"b": 1, "a": "Jörg"}, "msg_id": "m", "timestamp": 5,'
    ' "i": 1, "username": "u", "seq_id": 3 }',
    '{"i":1,"msg":{"a":1,"a":2},"msg_id":"m","seq_id":3,"timestamp":5,"topic":"@T@",'
    '"username":"u","msg":{"a":3}}',
    '{"i":1, "msg":"\\udcff lone","msg_id":"m","timestamp":5,"topic":"@T@","username":"u"}'
])
def test_a_frame_that_is_not_canonical_is_stored_canonical(text):
    text = text.replace("@T@", TOPIC)
    decoded, float_free = env.decode_flagged(frames_of(text))
    stored = record_of(decoded, TypeIndex(()), float_free=float_free).envelope
    assert stored == env.canonical_json(decoded) != text
    assert json.loads(stored) == decoded


def test_a_huge_body_is_stored_whole():
    body = {"text": "ü" * 2_000_000, "list": list(range(100_000))}
    wire = env.canonical_json(envelope(1, body)).encode()
    decoded, float_free = env.decode_flagged(frames_of(wire))
    assert float_free
    assert record_of(decoded, TypeIndex(()), float_free=True).envelope.encode() == wire


@pytest.mark.parametrize("frame", [
    b'{"topic":"' + TOPIC.encode() + b'","msg":"\xff\xfe not UTF-8"}',
    b"[" * (env.MAX_RECEIVED_DEPTH + 1) + b"]" * (env.MAX_RECEIVED_DEPTH + 1),
    b'{"topic":"' + TOPIC.encode() + b'","msg":NaN,"msg_id":"m","timestamp":5,'
    b'"i":1,"username":"u"}',
])
def test_hostile_frames_are_refused_with_a_reason(frame):
    with pytest.raises(EnvelopeError, match="not JSON"):
        env.decode_flagged(frames_of(frame))


# -- a real recorder on a real socket ----------------------------------------------------------
@contextmanager
def recording(make_settings, db: Path, statements: list[str] | None = None,
              **history: Any) -> Iterator[tuple[Any, Recorder]]:
    """A Recorder on ``db`` subscribed to a PUB socket this yields; ``statements`` gets
    every statement its position connection runs."""
    port = free_port()
    settings = make_settings(history={"batch_ms": 50, **history})
    store = SqliteHistory(db)
    recorder = Recorder(settings, store, index=TypeIndex(()),
                        endpoints=[Endpoint("ingest", f"tcp://127.0.0.1:{port}", None)])
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    if statements is not None:
        traced(recorder, statements)
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield pub, recorder
    finally:
        stop.set()
        thread.join(30)
        pub.close(linger=0)
        store.close()


def join(pub: Any, recorder: Recorder) -> int:
    """Send seq_id 1, 2... until the recorder stored one (the slow joiner); the last sent."""
    seq = 0
    deadline = time.monotonic() + 20
    while recorder.stored == 0 and time.monotonic() < deadline:
        seq += 1
        pub.send_multipart(env.encode(envelope(seq)))
        time.sleep(0.05)
    assert recorder.stored, "the recorder never joined"
    return seq


def wait(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)


def stored(db: Path) -> tuple[list[int], int]:
    with sqlite3.connect(db) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq_id FROM messages ORDER BY id")]
        (position,) = conn.execute("SELECT seq_id FROM position").fetchone()
    return seqs, position


def traced(recorder: Recorder, statements: list[str]) -> None:
    """Every statement the recorder's position connection runs goes to ``statements``."""
    make = recorder.consumer

    def consumer() -> Any:
        made = make()
        made.position.db.set_trace_callback(statements.append)
        return made

    recorder.consumer = consumer  # type: ignore[method-assign]


def test_a_batch_takes_no_savepoint_per_message(make_settings, tmp_path):
    db = tmp_path / "h.sqlite"
    statements: list[str] = []
    with recording(make_settings, db, statements) as (pub, recorder):
        first = join(pub, recorder)
        for seq in range(first + 1, first + 501):
            pub.send_multipart(env.encode(envelope(seq, {"n": seq, "text": "ü" * seq})))
        wait(lambda: stored(db)[1] == first + 500)
    seqs, position = stored(db)
    assert seqs == list(range(1, first + 501))[-len(seqs):]  # once each, in order
    assert seqs[-500:] == list(range(first + 1, first + 501)) and position == first + 500
    assert sum(s == "COMMIT" for s in statements) >= 1, statements[:20]
    assert not [s for s in statements if "SAVEPOINT callback" in s]


def test_every_message_is_stored_once_in_order_with_its_position(make_settings, tmp_path):
    db = tmp_path / "h.sqlite"
    with recording(make_settings, db, batch_messages=50) as (pub, recorder):
        first = join(pub, recorder)
        for seq in range(first + 1, first + 2001):
            pub.send_multipart(env.encode(envelope(seq)))
        wait(lambda: stored(db)[1] == first + 2000)
    seqs, position = stored(db)
    assert position == first + 2000
    assert seqs == list(range(seqs[0], first + 2001))  # nothing lost, nothing doubled
    with sqlite3.connect(db) as conn:
        (texts,) = conn.execute("SELECT COUNT(*) FROM messages_fold").fetchone()
    assert texts == len(seqs)
    SqliteHistory(db).close()  # a writer's open fills the index with what is left
    with sqlite3.connect(indexfile.index_path(db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages_text").fetchone() == (texts,)
