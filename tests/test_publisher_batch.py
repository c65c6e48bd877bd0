"""The daemon's send path (issue 16): rows go out many per call, in order, each whole,
stopping at the first a full subscriber would make wait; and sending goes on while the
published cursor waits for the state database's write lock."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import zmq

from gateway import runtime
from gateway.event import Event
from gateway.publisher import Publisher
from gateway.transports.zmq import ZmqPublisher


def joined(context: zmq.Context, transport: ZmqPublisher, rcvhwm: int = 1000) -> zmq.Socket:
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, rcvhwm)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(transport.socket.getsockopt_string(zmq.LAST_ENDPOINT))
    deadline = time.monotonic() + 10
    while transport.subscribers < 1 and time.monotonic() < deadline:
        transport.drain_subscriptions()
        time.sleep(0.01)
    assert transport.subscribers == 1
    return sub


def receive(sub: zmq.Socket, most: int, idle: float = 0.5) -> list[list[bytes]]:
    got: list[list[bytes]] = []
    while len(got) < most and sub.poll(int(idle * 1000)):
        got.append(sub.recv_multipart())
    return got


def test_many_rows_go_in_one_call_in_order_and_whole() -> None:
    context = zmq.Context()
    transport = ZmqPublisher(context, "tcp://127.0.0.1:0", sndhwm=50)
    sub = joined(context, transport, rcvhwm=50)
    try:
        rows = [(n, b"org.test.%d" % n, b'{"n":%d}' % n + b"x" * 2000) for n in range(1, 501)]
        sent = transport.try_send_many(rows, 0)
        assert 0 < sent == transport.sent
        # nobody reads: the pipe and the kernel buffers fill, then it must stop, not drop
        for _ in range(50):
            if sent == 500:
                break
            went = transport.try_send_many(rows, sent)
            sent += went
            if not went:
                break
        assert sent < 500, "an unread subscriber must make a send wait"
        assert transport.sent == sent and transport.dropped == 0
        got = receive(sub, 500)
        sent += transport.try_send_many(rows, sent)  # room again: the rest goes
        got += receive(sub, 500)
        while sent < 500:  # a few more rounds at most: the subscriber reads as we send
            sent += transport.try_send_many(rows, sent)
            got += receive(sub, 500)
        assert got == [[topic, payload] for _, topic, payload in rows]
    finally:
        sub.close(0)
        transport.close()
        context.term()


def test_sending_goes_on_while_the_cursor_waits_for_the_write_lock(make_settings) -> None:
    settings = make_settings()
    store = runtime.open_store(settings)
    with store.transaction() as tx:
        tx.add_events([Event("logger", "message", "log", key=f"b{n}", body={"n": n})
                       for n in range(50)])
    context = zmq.Context()
    transport = ZmqPublisher(context, "tcp://127.0.0.1:0")
    sub = joined(context, transport)
    blocker = sqlite3.connect(settings.db_path, isolation_level=None)

    async def scenario() -> tuple[int, int, int]:
        publisher = Publisher(store, transport, batch=10)
        task = asyncio.create_task(publisher.run())
        blocker.execute("BEGIN IMMEDIATE")  # as the spool worker's transaction does
        try:
            deadline = time.monotonic() + 10
            while publisher.sent < 50 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            during = (publisher.sent, store.published_seq_id())
        finally:
            blocker.execute("ROLLBACK")
        deadline = time.monotonic() + 10
        while store.published_seq_id() < 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        return (*during, store.published_seq_id())

    try:
        sent, cursor_while_locked, cursor = asyncio.run(scenario())
        # all five batches went while the first cursor write waited for the lock
        assert (sent, cursor_while_locked) == (50, 0)
        assert cursor == 50  # then every batch sent was recorded, none lost
        assert store.counters()["published.sent"] == 50
        got = receive(sub, 50)
        assert [int(frames[1].split(b'"seq_id":')[1].split(b",")[0]) for frames in got] \
            == list(range(1, 51))
    finally:
        blocker.close()
        sub.close(0)
        transport.close()
        context.term()
