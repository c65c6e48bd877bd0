"""The replay query language and a real REQ/REP server answering from the outbox."""

import json

import pytest
import zmq

from gateway import replay, runtime
from gateway.event import Event


def fill(settings, n):
    store = runtime.open_store(settings)
    events = [Event("logger", "message", "log", key=f"r{i}", body={"n": i}) for i in range(n)]
    events.append(Event("dak", "package", "accept", key="dak-1", body={"source": "x"}))
    with store.transaction() as tx:
        tx.add_events(events, now=1000)
    return store


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"seq_id": 3}, [3]),
        ({"seq_ids": [5, 2, 9]}, [2, 5, 9]),
        ({"seq_id_range": [4, 7]}, [4, 5, 6, 7]),
        ({"seq_id_range": [4, 5], "seq_id": 9}, [4, 5, 9]),
        ({"seq_id_range": [1, 31], "topics": ["org.debian.dev.dak."]}, [31]),
        ({"time": [999, 1001], "topics": ["org.debian.dev.logger"]}, list(range(1, 31))),
    ],
)
def test_answers_are_complete_and_in_order(make_settings, query, expected):
    store = fill(make_settings(), 30)
    frames = replay.answer(store, json.dumps(query).encode(), 1000)
    assert [json.loads(f)["seq_id"] for f in frames] == expected


def test_msg_id_queries(make_settings):
    store = fill(make_settings(), 5)
    ids = [json.loads(e)["msg_id"] for e in store.envelopes("seq_id IN (2, 4)", [], 10)]
    one = replay.answer(store, json.dumps({"msg_id": ids[0]}).encode(), 10)
    both = replay.answer(store, json.dumps({"msg_ids": ids}).encode(), 10)
    assert [json.loads(f)["seq_id"] for f in one] == [2]
    assert [json.loads(f)["seq_id"] for f in both] == [2, 4]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not a JSON object"),
        (b"[1, 2]", "non-empty JSON object"),
        (b"{}", "non-empty JSON object"),
        (b'{"seq_idz": 1}', "unknown query key"),
        (b'{"seq_id": "1"}', "seq_id must be an integer"),
        (b'{"seq_id_range": [5, 1]}', "low end is above"),
        (b'{"seq_id_range": [1]}', "[low, high] pair"),
        (b'{"seq_ids": []}', "non-empty list"),
        (b'{"time": ["a", 2]}', "numbers"),
        (b'{"topics": ["org."]}', "names no messages"),
        (b'{"seq_id": 999}', "no messages match"),
        (b'{"seq_id_range": [1, 40]}', "more than 10 messages"),
    ],
)
def test_bad_queries_get_one_error_frame(make_settings, raw, message):
    store = fill(make_settings(), 30)
    frames = replay.answer(store, raw, 10)
    assert len(frames) == 1
    assert frames[0].startswith(b"error: '")
    assert message in frames[0].decode()


def test_real_server_keeps_answering_after_bad_requests(daemon):
    proc, settings = daemon()
    fill(settings, 20)
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.connect(settings.zmq.replay)
        for bad in (b"\x00\xff garbage", b'{"seq_id": -1.5}', b"[]"):
            sock.send(bad)
            reply = sock.recv_multipart()
            assert len(reply) == 1 and reply[0].startswith(b"error: ")
        sock.close(0)
        got = replay.query(settings.zmq.replay, {"seq_id_range": [1, 21]}, context=ctx)
        assert [e["seq_id"] for e in got] == list(range(1, 22))
        assert replay.query(settings.zmq.replay, {"seq_id": 500}, context=ctx) == []
        with pytest.raises(replay.ReplayError, match="unknown query key"):
            replay.query(settings.zmq.replay, {"bogus": 1}, context=ctx)
    finally:
        ctx.destroy(0)
    assert proc.stop() == 0
    counters = runtime.open_store(settings).counters()
    assert counters["replay.requests"] == 6
    assert counters["replay.errors"] == 5  # three bad frames, one unknown key, one no match
    assert counters["replay.messages"] == 21


def test_client_times_out_on_a_silent_endpoint():
    ctx = zmq.Context()
    silent = ctx.socket(zmq.ROUTER)  # accepts the connection, never replies
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        with pytest.raises(replay.ReplayError, match="no answer"):
            replay.query(f"tcp://127.0.0.1:{port}", {"seq_id": 1}, timeout=0.3, context=ctx)
    finally:
        silent.close(0)
        ctx.destroy(0)


class ForgetfulProxy:
    """A replay endpoint in front of a real one that leaves the first ``drop`` requests
    for a seq_id range unanswered (a publisher too loaded to answer in time), and
    forwards everything else."""

    def __init__(self, target: str, drop: int):
        import threading

        self.target, self.drop, self.dropped = target, drop, 0
        self.ctx = zmq.Context()
        self.front = self.ctx.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        self.url = f"tcp://127.0.0.1:{self.front.bind_to_random_port('tcp://127.0.0.1')}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.front.poll(50):
                continue
            ident, empty, body = self.front.recv_multipart()
            if "seq_id_range" in json.loads(body) and self.dropped < self.drop:
                self.dropped += 1
                continue
            back = self.ctx.socket(zmq.REQ)
            back.setsockopt(zmq.LINGER, 0)
            back.connect(self.target)
            back.send(body)
            if back.poll(5000):
                self.front.send_multipart([ident, empty, *back.recv_multipart()])
            back.close(0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.front.close(0)
        self.ctx.destroy(0)


@pytest.mark.parametrize(("drop", "want_unrepaired"), [(2, 0), (3, 4)],
                         ids=["answered-on-the-last-try", "never-answered"])
def test_a_repair_left_unanswered_is_asked_again_before_it_counts_as_lost(
        daemon, drop, want_unrepaired):
    """A gap's page that gets no answer within ``replay_timeout`` is asked for again, up
    to ``REPAIR_TRIES`` times, so a loaded publisher costs a subscriber time, not
    messages; past the tries the seq_ids count as unrepaired, as before."""
    import subprocess
    import time

    from gateway import subscriber as sub_module
    from gateway.discovery import Endpoint
    from gateway.subscriber import Subscriber
    from tests.conftest import BUSGATE, REPO

    assert sub_module.REPAIR_TRIES == 3
    proc, settings = daemon()
    subprocess.run([*BUSGATE, "publish"], input="".join(f"m {i}\n" for i in range(4)),
                   text=True, env=proc.env, cwd=REPO, check=True, timeout=60)
    store = runtime.open_store(settings, create=False)
    deadline = time.monotonic() + 10
    while store.published_seq_id() < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    epoch = store.epoch()
    store.close()
    proxy = ForgetfulProxy(settings.zmq.replay, drop)
    endpoint = Endpoint(settings.publisher.name, settings.zmq.publish, proxy.url)
    try:
        with Subscriber([endpoint], resume={settings.publisher.name: (epoch, 0)},
                        replay_timeout=0.5) as sub:
            got = [m.envelope["msg"]["log"] for m in sub.messages(count=4, timeout=3)]
            unrepaired = sub.stats.unrepaired
    finally:
        proxy.close()
    assert proxy.dropped == drop
    assert unrepaired == want_unrepaired
    assert got == ([] if want_unrepaired else [f"m {i}" for i in range(4)])
