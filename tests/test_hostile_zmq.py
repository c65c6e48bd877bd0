"""Hostile and unlucky peers on the ZeroMQ wire (issue 9, findings 1, 2 and 9).

Every test talks to a real ``busgate run`` over 127.0.0.1; hostile peers are
raw ZMTP connections (tests/zmtp.py) or real libzmq sockets misused. Memory is
the daemon process's own VmRSS/VmHWM from /proc.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zmq

from gateway import discovery, heartbeat, replay, runtime
from gateway.event import Event
from gateway.spool import Spool
from gateway.subscriber import Subscriber
from tests import zmtp
from tests.conftest import BUSGATE, REPO

MB = 1024 * 1024


def vm(pid: int, key: str) -> int:
    """VmRSS / VmHWM of ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def publish(proc, *args: str, text: str = "", check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*BUSGATE, "publish", *args], input=text, text=True, env=proc.env,
                          cwd=REPO, capture_output=True, check=check, timeout=120)


def wait_published(settings, seq: int, timeout: float = 60) -> None:
    store = runtime.open_store(settings)
    deadline = time.monotonic() + timeout
    while store.published_seq_id() < seq and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.published_seq_id() >= seq, (store.published_seq_id(), seq)


def fill(settings, n: int, size: int = 10, now: int = 1000) -> None:
    store = runtime.open_store(settings)
    pad = "x" * size
    with store.transaction() as tx:
        tx.add_events([Event("logger", "message", "log", key=f"fill-{now}-{i}",
                             body={"n": i, "pad": pad}) for i in range(n)], now=now)
    store.close()


def still_serves(settings) -> None:
    got = replay.query(settings.zmq.replay, {"seq_id_range": [1, 3]}, timeout=10)
    assert [e["seq_id"] for e in got] == [1, 2, 3]


# -- finding 1: malformed replay requests --------------------------------------------------
def test_malformed_replay_requests_get_an_error_and_never_stop_the_daemon(daemon):
    proc, settings = daemon()
    fill(settings, 5)
    ctx = zmq.Context()
    try:
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.RCVTIMEO, 10000)
        req.connect(settings.zmq.replay)
        req.send_multipart([b'{"seq_id": 1}', b'{"seq_id": 2}'])  # two frames
        assert req.recv_multipart() == [b"error: 'a request is one frame of JSON'"]
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.RCVTIMEO, 10000)
        dealer.connect(settings.zmq.replay)
        dealer.send(b'{"seq_id": 1}')  # no empty delimiter: answered without one
        (frame,) = dealer.recv_multipart()
        assert json.loads(frame)["seq_id"] == 1
        for bad in ([b"\xff\xfe garbage"], [b"", b"x", b"y"], [b"", b"[" * 50000],
                    [b"", b'{"seq_id": 1, "paged": 3}'], [b"", b'{"after_seq_id": 1}']):
            dealer.send_multipart(bad)
            reply = dealer.recv_multipart()
            assert reply[-1].startswith(b"error: '"), (bad[:2], reply)
        for _ in range(3):  # a routing envelope only, and an empty message
            dealer.send_multipart([b""])
        dealer.send(b"")
        for _ in range(4):
            assert dealer.recv_multipart()[-1].startswith(b"error: '")
    finally:
        ctx.destroy(0)
    still_serves(settings)
    assert proc.proc.poll() is None
    assert proc.stop() == 0


def test_oversize_replay_frame_is_refused_before_allocation(daemon):
    proc, settings = daemon()
    fill(settings, 5)
    before = vm(proc.proc.pid, "VmHWM")
    sock = zmtp.connect(settings.zmq.replay, "REQ")
    try:
        # A 500 MB frame is announced; 8 MB of it follow (as much as the peer takes).
        sock.sendall(zmtp.frame(b"", more=True) + zmtp.header(500 * MB))
        with pytest.raises(OSError):
            for _ in range(8):
                sock.sendall(b"\0" * MB)
        assert zmtp.closed_by_peer(sock)
    finally:
        sock.close()
    still_serves(settings)
    grown = vm(proc.proc.pid, "VmHWM") - before
    assert grown < 16 * MB, f"daemon peak grew by {grown / MB:.1f} MB"


@pytest.mark.slow
def test_replay_frame_flood_keeps_the_daemon_small(daemon):
    """Garbage requests never read back, endless multipart messages: RSS stays bounded."""
    proc, settings = daemon()
    fill(settings, 5)
    pid = proc.proc.pid
    before = vm(pid, "VmHWM")
    ctx = zmq.Context()
    hung_up = 0
    try:
        flooders = []
        for _ in range(4):  # real DEALERs firing requests, never reading a reply
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.SNDHWM, 0)
            dealer.connect(settings.zmq.replay)
            flooders.append(dealer)
        for i in range(20000):
            flooders[i % 4].send_multipart([b"", b"junk %d" % i], flags=zmq.NOBLOCK)
        # Endless multipart messages: libzmq would buffer every frame until the last.
        frames = b"".join(zmtp.frame(b"y" * 200, more=True) for _ in range(5000))  # 1 MB
        for _ in range(8):
            sock = zmtp.connect(settings.zmq.replay, "DEALER")
            try:
                for _ in range(64):
                    sock.sendall(frames)
            except OSError:
                hung_up += 1
            finally:
                sock.close()
        time.sleep(1)
    finally:
        ctx.destroy(0)
    assert hung_up == 8, "a peer sending 64 MB of one message must be hung up on"
    still_serves(settings)
    grown = vm(pid, "VmHWM") - before
    print(f"replay flood: daemon VmHWM {before / MB:.1f} MB -> +{grown / MB:.1f} MB")
    assert grown < 64 * MB, f"daemon peak grew by {grown / MB:.1f} MB"


def test_replay_replies_are_capped_in_bytes_and_paged(daemon):
    proc, settings = daemon(zmq={"replay_max_bytes": 1 * MB})
    fill(settings, 40, size=100_000)  # 4 MB of envelopes
    with pytest.raises(replay.ReplayError, match="paged"):
        replay.query(settings.zmq.replay, {"seq_id_range": [1, 40]})
    pages = list(replay.pages(settings.zmq.replay, {"seq_id_range": [1, 40]}))
    assert [e["seq_id"] for p in pages for e in p.envelopes] == list(range(1, 41))
    assert len(pages) >= 4
    assert all(sum(len(json.dumps(e)) for e in p.envelopes) <= 1.01 * MB for p in pages)
    assert pages[-1].more is False and pages[0].more is True
    assert pages[0].last_seq_id == 40 and pages[0].publisher == "busgate"
    assert pages[0].publisher_epoch == runtime.open_store(settings).epoch()
    cli = subprocess.run([*BUSGATE, "replay", "--seq-id-range", "1", "40"], env=proc.env,
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert [json.loads(line)["seq_id"] for line in cli.stdout.splitlines()] == list(range(1, 41))


# -- finding 2: the PUB port -----------------------------------------------------------
def test_oversize_subscription_frame_is_refused_before_allocation(daemon):
    proc, settings = daemon()
    before = vm(proc.proc.pid, "VmHWM")
    sock = zmtp.connect(settings.zmq.publish, "SUB")
    try:
        sock.sendall(zmtp.header(500 * MB) + b"\x01")
        with pytest.raises(OSError):
            for _ in range(8):
                sock.sendall(b"t" * MB)
        assert zmtp.closed_by_peer(sock)
    finally:
        sock.close()
    grown = vm(proc.proc.pid, "VmHWM") - before
    assert grown < 16 * MB, f"daemon peak grew by {grown / MB:.1f} MB"


@pytest.mark.slow
def test_subscription_flood_keeps_the_daemon_small_and_subscribers_served(daemon):
    """2 million 100-byte subscriptions (200 MB) over reconnecting raw connections."""
    proc, settings = daemon()
    pid = proc.proc.pid
    before = vm(pid, "VmHWM")
    sent = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def flood() -> None:
        while time.monotonic() < deadline:
            if sent[0] >= 2_000_000:
                return
            try:
                sock = zmtp.connect(settings.zmq.publish, "SUB")
            except OSError:
                continue
            try:
                while True:
                    with lock:
                        start = sent[0]
                        sent[0] += 10000
                    # 1 MB of subscriptions never sent before (duplicates would cost nothing)
                    sock.sendall(zmtp.subscriptions(10000, start=start))
                    if start + 10000 >= 2_000_000:
                        break
            except OSError:
                pass
            finally:
                sock.close()

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sent[0] >= 2_000_000
    time.sleep(1)
    grown = vm(pid, "VmHWM") - before
    print(f"subscription flood: {sent[0]} subscriptions sent; daemon VmHWM "
          f"{before / MB:.1f} MB -> +{grown / MB:.1f} MB")
    assert grown < 32 * MB, f"daemon peak grew by {grown / MB:.1f} MB"  # main: GBs
    assert "hung up on" in proc.output()
    # An honest subscriber is still served.
    with Subscriber(discovery.discover(settings), topics=["org.debian.dev.logger"]) as sub:
        for attempt in range(100):
            publish(proc, "--message", f"after flood {attempt}")
            if list(sub.messages(count=1, timeout=0.3)):
                break
        else:
            raise AssertionError("no message reached a subscriber after the flood")
    assert proc.proc.poll() is None


# -- finding 9: subscribers losing messages ---------------------------------------------
def start_tail(proc, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*BUSGATE, "tail", *args], env=proc.env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Lines:
    """Collect a process's stdout lines in a thread (so a big burst never blocks it)."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(process.stdout),
                                       daemon=True)
        self.thread.start()

    def count(self, word: str) -> int:
        return sum(1 for line in self.lines if word in line)

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.lines):
                return True
            time.sleep(0.05)
        return predicate(self.lines)


def logs(lines: list[str], word: str) -> list[str]:
    return [line for line in lines if word in line]


def join(proc, lines: Lines, word: str = "probe") -> None:
    """Publish probes until the tail printed one (it is subscribed then)."""
    for attempt in range(100):
        publish(proc, "--message", f"{word} {attempt}")
        if lines.wait_for(lambda got: logs(got, word), 0.2):
            return
    raise AssertionError("the tail never printed a probe")


#: Replies of the gap test's daemon carry at most this many messages: the gap below is
#: four of them, so the tail must page (what a gap past the default 100,000 would prove
#: at a tenth of the events).
GAP_REPLY_MESSAGES = 5_000


@pytest.mark.slow
def test_a_stopped_tail_gets_all_of_a_gap_larger_than_several_replies(daemon):
    total = 4 * GAP_REPLY_MESSAGES
    # 1 kB a message: 20 MB, more than the loopback socket buffers and the HWM hold.
    pad = "x" * 1000
    proc, settings = daemon(zmq={"sndhwm": 1000, "hwm_wait_ms": 5,
                                 "replay_max_messages": GAP_REPLY_MESSAGES})
    tail = start_tail(proc, "--terse", "--topic", "org.debian.dev.logger", "--timeout", "240")
    lines = Lines(tail)
    try:
        join(proc, lines)
        start = runtime.open_store(settings).last_seq_id()
        tail.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            publish(proc, text="".join(f"gap {i} {pad}\n" for i in range(total)))
            t1 = time.monotonic()
            # every one sent (or dropped) while the tail is stopped, not only those stored yet
            wait_published(settings, start + total)
        finally:
            tail.send_signal(signal.SIGCONT)
        t2 = time.monotonic()
        deadline = time.monotonic() + 180
        while len(lines.lines) < total and time.monotonic() < deadline:
            time.sleep(0.2)  # cheap: the lines are checked once, below
        print(f"publish {t1 - t0:.1f} s, outbox+send {t2 - t1:.1f} s, "
              f"tail {time.monotonic() - t2:.1f} s")
    finally:
        tail.kill()
        tail.wait()
    gap = logs(lines.lines, "log=gap ")
    numbers = [line.rsplit("log=gap ", 1)[1].split()[0] for line in gap]
    assert numbers == [str(i) for i in range(total)]
    counters = runtime.open_store(settings).counters()
    print(f"published.dropped {counters.get('published.dropped', 0)}")
    assert counters.get("published.dropped", 0) > GAP_REPLY_MESSAGES, \
        "the gap must have been a real drop, more than one replay reply carries"


def test_published_dropped_counts_messages_not_episodes(daemon):
    proc, settings = daemon(zmq={"sndhwm": 100, "hwm_wait_ms": 5})
    total = 12_000  # 12 MB: more than the loopback socket buffers hold
    with Subscriber(discovery.discover(settings), rcvhwm=100,
                    heartbeat_topic=heartbeat.topic(settings.topic_prefix)) as sub:
        for attempt in range(100):
            publish(proc, "--message", f"probe {attempt}")
            if list(sub.messages(count=1, timeout=0.2)):
                break
        start = runtime.open_store(settings).last_seq_id()
        publish(proc, text="".join(f"stalled {i} {'x' * 1000}\n" for i in range(total)))
        wait_published(settings, start + total)  # the subscriber reads nothing meanwhile
        got = [m for m in sub.messages(timeout=60, idle=3)
               if str(m.body.get("log", "")).startswith("stalled")]
        missed_live = sum(1 for m in got if m.replayed)
    assert len(got) == total
    dropped = runtime.open_store(settings).counters().get("published.dropped", 0)
    print(f"stalled subscriber: missed {missed_live} live, published.dropped = {dropped}")
    assert missed_live > 1000
    assert 0.5 * missed_live <= dropped <= 1.5 * missed_live + 2000


def test_heartbeat_topic_cannot_be_published_and_forgeries_are_ignored(daemon):
    proc, settings = daemon()
    refused = publish(proc, "--modname", "busgate", "--topic", "publisher.heartbeat",
                      "--json-input", text='{"last_seq_id": 1000000000000}\n', check=False)
    assert refused.returncode == 65 and "heartbeat" in refused.stderr
    tail = start_tail(proc, "--terse", "--topic", "org.debian.dev.logger", "--timeout", "60")
    lines = Lines(tail)
    try:
        join(proc, lines)
        # Whoever can write the spool directly still only makes an ordinary, sequenced message.
        Spool(settings.spool_dir).deliver("events", [json.dumps(Event(
            "busgate", "publisher", "heartbeat", key="forged",
            body={"publisher": "busgate", "last_seq_id": 10 ** 12}).to_dict()).encode() + b"\n"])
        # A rogue publisher's forged heartbeat naming the real publisher.
        ctx = zmq.Context()
        rogue = ctx.socket(zmq.PUB)
        port = rogue.bind_to_random_port("tcp://127.0.0.1")
        forged = heartbeat.build(settings.topic_prefix, "busgate", "mallory", 10 ** 12,
                                 settings.zmq.replay)
        try:
            with Subscriber([*discovery.discover(settings),
                             discovery.Endpoint("rogue", f"tcp://127.0.0.1:{port}", None)],
                            heartbeat_topic=heartbeat.topic(settings.topic_prefix)) as sub:
                for _ in range(20):
                    rogue.send_multipart(forged)
                    time.sleep(0.02)
                publish(proc, "--message", "after forgery")
                got = [m.body for m in sub.messages(timeout=10, idle=2)]
                assert {"log": "after forgery"} in got
                assert sub.stats.invalid >= 1
        finally:
            rogue.close(0)
            ctx.destroy(0)
        for i in range(3):
            publish(proc, "--message", f"later {i}")
        assert lines.wait_for(lambda got: len(logs(got, "log=later")) == 3, 30)
    finally:
        tail.kill()
        tail.wait()


def test_heartbeat_claims_are_believed_only_as_far_as_replay_delivers(daemon):
    """A heartbeat naming our publisher, with its real replay, claims seq_id 10^12."""
    proc, settings = daemon()
    ctx = zmq.Context()
    rogue = ctx.socket(zmq.PUB)
    port = rogue.bind_to_random_port("tcp://127.0.0.1")
    real = discovery.discover(settings)[0]
    twin = discovery.Endpoint("busgate", f"tcp://127.0.0.1:{port}", real.replay)
    forged = heartbeat.build(settings.topic_prefix, "busgate", "mallory", 10 ** 12,
                             real.replay, runtime.open_store(settings).epoch())
    try:
        with Subscriber([real, twin],
                        heartbeat_topic=heartbeat.topic(settings.topic_prefix)) as sub:
            for attempt in range(100):
                publish(proc, "--message", f"probe {attempt}")
                if list(sub.messages(count=1, timeout=0.2)):
                    break
            for _ in range(10):
                rogue.send_multipart(forged)
                list(sub.messages(timeout=0.05))
            assert sub.stats.last_seq["busgate"] < 10 ** 6
            for i in range(5):
                publish(proc, "--message", f"real {i}")
            got = [m.body["log"] for m in sub.messages(timeout=15, idle=2)
                   if m.body["log"].startswith("real")]
        assert got == [f"real {i}" for i in range(5)]
    finally:
        rogue.close(0)
        ctx.destroy(0)


def test_a_running_tail_notices_a_wiped_state_and_prints_the_new_messages(daemon):
    proc, settings = daemon()
    tail = start_tail(proc, "--terse", "--topic", "org.debian.dev.logger", "--timeout", "90")
    lines = Lines(tail)
    try:
        join(proc, lines)
        publish(proc, text="".join(f"old {i}\n" for i in range(20)))
        assert lines.wait_for(lambda got: len(logs(got, "log=old")) == 20, 30)
        assert proc.stop() == 0
        shutil.rmtree(settings.state_dir)
        proc.start()
        publish(proc, text="".join(f"new {i}\n" for i in range(5)))
        assert lines.wait_for(lambda got: len(logs(got, "log=new")) == 5, 30), lines.lines[-5:]
    finally:
        tail.kill()
        tail.wait()
    assert [line.rsplit("log=", 1)[1].rstrip() for line in logs(lines.lines, "log=new")] == \
        [f"new {i}" for i in range(5)]


def test_a_tail_that_received_nothing_gets_what_a_restarted_daemon_publishes_first(daemon):
    proc, _settings = daemon()
    tail = start_tail(proc, "--terse", "--topic", "org.debian.dev.logger", "--timeout", "60")
    lines = Lines(tail)
    try:
        time.sleep(1)  # the tail has asked where the publisher stands; it printed nothing
        assert proc.stop() == 0
        publish(proc, "--message", "published while the daemon was down")
        proc.start()  # publishes it at once, before the tail's SUB has reconnected
        assert lines.wait_for(lambda got: logs(got, "while the daemon was down"), 30)
    finally:
        tail.kill()
        tail.wait()
    assert len(logs(lines.lines, "log=")) == 1


def test_a_tail_started_while_the_daemon_is_down_gets_its_first_messages(daemon):
    proc, _settings = daemon()
    assert proc.stop() == 0
    tail = start_tail(proc, "--terse", "--topic", "org.debian.dev.logger", "--timeout", "60")
    lines = Lines(tail)
    try:
        time.sleep(2.5)  # the tail's start-up question went unanswered
        publish(proc, "--message", "first after start")
        proc.start()
        assert lines.wait_for(lambda got: logs(got, "first after start"), 30)
    finally:
        tail.kill()
        tail.wait()


def test_connections_past_the_peer_limits_are_hung_up_on(daemon):
    proc, settings = daemon(zmq={"max_subscribers": 2, "replay_max_peers": 2})
    fill(settings, 5)
    for url, kind in ((settings.zmq.publish, "SUB"), (settings.zmq.replay, "REQ")):
        socks = []
        try:
            for _ in range(5):
                socks.append(zmtp.connect(url, kind))
                time.sleep(0.1)  # accepted in this order: the newest are hung up on
            assert [zmtp.closed_by_peer(s, timeout=1) for s in socks] == \
                [False, False, True, True, True], kind
        finally:
            for s in socks:
                s.close()
    still_serves(settings)
    assert proc.proc.poll() is None
