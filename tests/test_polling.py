"""The core side of polling: apply() in one transaction, source_facts, the store's
v1 -> v2 migration on a real v1 file, quarantine caps, back-off, and the heartbeat sent
through the Publisher and the Transport interface."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
import zmq
from conftest import free_port

from gateway import backoff, heartbeat
from gateway.config import QuarantineSettings
from gateway.event import Event
from gateway.polling import PollResult, QuarantineItem, StatePlan, StoreView, apply
from gateway.publisher import Publisher
from gateway.store import SCHEMA_VERSION, EnvelopeFactory, Store, Transaction
from gateway.transports.zmq import ZmqPublisher

V1 = Path(__file__).resolve().parent.parent / "fixtures" / "state" / "v1.sqlite"


def make_store(path: Path) -> Store:
    return Store(path, EnvelopeFactory("org.test.dev", "test", "tester"))


def event(n: int, *facts: tuple[str, str, str]) -> Event:
    return Event(service="src", object="thing", event="changed", key=f"src:{n}",
                 body={"n": n}, facts=facts)


def state_of(store: Store) -> dict:
    conn = store.connect()
    return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("outbox", "cursors", "snapshots", "source_facts", "quarantine",
                          "counters")}


def full_result() -> PollResult:
    plan = StatePlan(cursors={"src.cursor": "42"},
                     snapshots={("src", "a"): "1", ("src", "gone"): None},
                     consumed_facts=[("src.mail", "7", "close")],
                     quarantine=[QuarantineItem("src-row", b"bad row", "ValueError: bad")],
                     counters={"src.polls": 1, "src.rows": 3})
    return PollResult([event(1), event(2)], plan, summary="3 rows read")


def test_apply_commits_events_and_whole_plan_in_one_transaction(tmp_path, monkeypatch) -> None:
    store = make_store(tmp_path / "s.sqlite")
    with store.transaction() as tx:
        tx.put_snapshot("src", "gone", "x")
        tx.add_events([event(0, ("src.mail", "7", "close"))])
    before = state_of(store)

    def power_cut(self, facts):  # dies after events, quarantine and snapshots were written
        raise OSError("power cut")

    monkeypatch.setattr(Transaction, "consume_facts", power_cut)
    with pytest.raises(OSError):
        apply(store, full_result())
    assert state_of(store) == before  # nothing of it: events and cursor roll back together

    monkeypatch.undo()
    assert apply(store, full_result()) == [2, 3]
    assert [r.seq_id for r in store.rows_after(0)] == [1, 2, 3]
    assert store.cursor("src.cursor") == "42"
    assert store.snapshots("src") == {"a": "1"}
    assert store.facts("src.mail") == {}
    [kept] = store.quarantined()
    assert (kept["kind"], kept["reason"], kept["raw"]) == ("src-row", "poison", b"bad row")
    counters = store.counters()
    assert counters["src.polls"] == 1 and counters["src.rows"] == 3
    assert counters["quarantined.poison"] == 1
    # applied again (a re-run poll): no new event, counters add up
    assert apply(store, PollResult([event(1)], StatePlan(counters={"src.polls": 1}))) == []
    assert store.counters()["src.polls"] == 2


def test_cursor_none_deletes_a_retired_cursor(tmp_path) -> None:
    store = make_store(tmp_path / "s.sqlite")
    apply(store, PollResult([], StatePlan(cursors={"old": "1", "new": "2"})))
    apply(store, PollResult([], StatePlan(cursors={"old": None})))
    assert store.cursor("old") is None and store.cursor("new") == "2"


def test_facts_are_written_once_with_the_event_that_first_adds_them(tmp_path) -> None:
    store = make_store(tmp_path / "s.sqlite")
    fact = ("src.mail", "7", "close")
    with store.transaction() as tx:
        assert tx.add_events([event(1, fact), event(1, fact)], now=1000) == [1]
    assert store.facts("src.mail") == {"7": {"close": 1000.0}}
    view = StoreView(store)
    assert view.facts("src.mail") == {"7": {"close": 1000.0}} and view.has_key("src:1")
    apply(store, PollResult([], StatePlan(consumed_facts=[fact])))
    assert store.facts("src.mail") == {}
    with store.transaction() as tx:  # the same source event delivered again
        assert tx.add_events([event(1, fact)], now=2000) == []
    assert store.facts("src.mail") == {}, "a duplicate must not bring a consumed fact back"
    with store.transaction() as tx:  # a batch mixing a duplicate and a new event
        assert tx.add_events([event(1, fact), event(2, ("src.mail", "8", "report"))],
                             now=3000) == [2]
    assert store.facts("src.mail") == {"8": {"report": 3000.0}}


def test_quarantine_through_the_plan_keeps_to_the_caps(tmp_path, caplog) -> None:
    store = make_store(tmp_path / "s.sqlite")
    items = [QuarantineItem("src-row", bytes([65 + i]) * 100, f"bad {i}", origin=f"row {i}")
             for i in range(4)]
    caps = QuarantineSettings(max_items=3, max_bytes=250)
    apply(store, PollResult([event(1)], StatePlan(quarantine=items)), caps)
    kept = store.quarantined()
    assert [len(k["raw"]) for k in kept] == [100, 100, 0]  # the third is over max_bytes
    assert "not kept: quarantine.max_bytes (250) reached" in kept[2]["error"]
    counters = store.counters()
    assert counters["quarantine.raw_dropped"] == 1 and counters["quarantine.dropped"] == 1
    assert counters["quarantined.poison"] == 3
    assert "quarantine full (quarantine.max_items = 3)" in caplog.text and "row 3" in caplog.text
    assert store.last_seq_id() == 1  # the events of the poll are committed all the same


def test_v1_state_file_migrates_to_v2_in_place(tmp_path) -> None:
    path = tmp_path / "busgate.sqlite"
    shutil.copy(V1, path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (1,)
        old = {t: raw.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
               for t in ("outbox", "cursors", "snapshots", "quarantine", "counters")}
    raw.close()
    store = make_store(path)
    assert store.connect().execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert SCHEMA_VERSION == 4
    now = state_of(store)
    for table, rows in old.items():
        assert now[table] == rows, table  # every v1 row kept as it was
    assert now["source_facts"] == []
    assert store.epoch() and store.last_seq_id() == 2
    with store.transaction() as tx:  # the new table works, the seq_ids go on
        assert tx.add_events([event(1, ("src.mail", "1", "close"))]) == [3]
    store.close()
    again = make_store(path)  # opening a v2 file again changes nothing
    assert again.facts("src.mail") == {"1": {"close": pytest.approx(time.time(), abs=60)}}


def test_newer_schema_is_refused(tmp_path) -> None:
    from gateway.errors import StoreError

    path = tmp_path / "s.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer than this busgate"):
        make_store(path)


def test_one_back_off_rule() -> None:
    assert backoff.delay(10, 0) == 10
    assert [backoff.delay(10, n) for n in range(1, 6)] == [10, 20, 40, 80, 80]
    assert backoff.delay(600, 5) == 3600  # at most an hour...
    assert backoff.delay(7200, 3) == 7200  # ...but never less than one interval
    assert backoff.delay(0.2, 10_000) == pytest.approx(1.6)  # no overflow on long outages


def test_scheduler_and_cli_loop_use_the_back_off_rule() -> None:
    import inspect

    from gateway import scheduler
    from gateway.cli import poll

    for module in (scheduler, poll):
        source = inspect.getsource(module)
        assert "backoff.delay(" in source and "2 **" not in source and "* 2" not in source


def test_heartbeat_goes_through_the_publisher_and_its_transport(tmp_path) -> None:
    """The daemon hands heartbeats to the Publisher, which sends them through its
    Transport (``send_now``), carrying the last seq_id that publisher handed over."""
    import inspect

    from gateway import daemon

    source = inspect.getsource(daemon._heartbeats)
    assert "publisher.heartbeat(" in source and "send_now" not in source
    assert "drain_subscriptions" not in inspect.getsource(daemon)

    store = make_store(tmp_path / "s.sqlite")
    with store.transaction() as tx:
        tx.add_events([event(n) for n in range(3)])
    context = zmq.Context()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    transport = ZmqPublisher(context, endpoint)
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVTIMEO, 100)
    topic = heartbeat.topic("org.test.dev")
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sub.connect(endpoint)
    try:
        async def drain_outbox() -> Publisher:
            publisher = Publisher(store, transport)
            task = asyncio.create_task(publisher.run())
            deadline = time.monotonic() + 5
            while publisher.sent_seq < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            task.cancel()
            return publisher

        publisher = asyncio.run(drain_outbox())
        assert publisher.sent_seq == 3

        def build(seq_id: int) -> tuple[bytes, bytes]:
            return heartbeat.build("org.test.dev", "test", "tester", seq_id, None, "e")

        got = None
        deadline = time.monotonic() + 5
        while got is None and time.monotonic() < deadline:  # the SUB may join late
            publisher.heartbeat(build)
            try:
                got = sub.recv_multipart()
            except zmq.Again:
                continue
        assert got is not None, "no heartbeat reached the subscriber"
        envelope = json.loads(got[1])
        assert got[0] == topic.encode() and heartbeat.is_heartbeat(envelope)
        assert envelope["msg"]["last_seq_id"] == 3
        assert store.last_seq_id() == 3  # heartbeats are not stored
    finally:
        sub.close(0)
        transport.close()
        context.term()


def test_pollers_do_not_touch_the_store() -> None:
    """Adapters translate, the core commits: no poller imports gateway.store or opens a
    transaction."""
    import ast

    root = Path(__file__).resolve().parent.parent / "adapters"
    for path in root.glob("*/poller.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "gateway.store", path
                assert not (node.module == "gateway"
                            and any(a.name == "store" for a in node.names)), path
            elif isinstance(node, ast.Import):
                assert all(a.name != "gateway.store" for a in node.names), path
            elif isinstance(node, ast.Attribute):
                assert node.attr != "transaction", f"{path}: line {node.lineno}"


def test_apply_quarantines_an_event_its_type_refuses_and_commits_the_rest(tmp_path) -> None:
    from example_types import TYPES

    from gateway.messages import TypeIndex

    store = Store(tmp_path / "s.sqlite", EnvelopeFactory("org.test.dev", "test", "tester",
                                                         index=TypeIndex(TYPES)))
    good = Event("dak", "package", "accept", key="good",
                 body={"source": "hebcal", "version": "1-1", "suite": "sid"})
    bad = Event("dak", "package", "accept", key="bad",
                body={"source": "hebcal", "version": 3, "suite": "sid"})
    given = apply(store, PollResult([good, bad], StatePlan(cursors={"src.cursor": "9"})))
    assert given == [1]
    assert [r.topic for r in store.rows_after(0)] == ["org.test.dev.dak.package.accept"]
    assert store.cursor("src.cursor") == "9"  # the poll still moves on
    (kept,) = store.quarantined()
    assert (kept["reason"], kept["kind"], kept["origin"]) == ("invalid", "events", "bad")
    assert "version: 3 is not of type 'string'" in kept["error"]
    assert json.loads(kept["raw"])["key"] == "bad"  # busgate reprocess can parse it
