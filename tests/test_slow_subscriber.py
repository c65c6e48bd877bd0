"""A subscriber that stops reading: what the README promises at the high-water mark.

It misses nothing until ``zmq.sndhwm`` messages (plus what its own RCVHWM and the
kernel's socket buffers hold) are queued for it; past that every message it misses
is counted in ``published.dropped`` (an upper estimate: never less than the misses, at
most once per message per subscriber), a subscriber that keeps reading loses nothing
meanwhile, and replay gives back every missed message.
"""

import time

import zmq

from gateway import discovery, envelope, heartbeat, replay, runtime
from gateway.event import Event
from gateway.subscriber import Subscriber

SNDHWM = 500
RCVHWM = 100
TOTAL = 8000
PAD = "x" * 2000  # 8000 x ~2.3 KB: far more than loopback socket buffers hold


def wait_published(settings, seq_id, timeout=60):
    store = runtime.open_store(settings)
    deadline = time.monotonic() + timeout
    while store.published_seq_id() < seq_id:
        assert time.monotonic() < deadline, f"published {store.published_seq_id()} of {seq_id}"
        time.sleep(0.05)


def test_a_stalled_subscriber_misses_only_past_the_bound_every_miss_counted(daemon):
    proc, settings = daemon(zmq={"sndhwm": SNDHWM, "hwm_wait_ms": 20})
    store = runtime.open_store(settings)
    ctx = zmq.Context()
    stalled = ctx.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, RCVHWM)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(settings.zmq.publish)
    try:
        with Subscriber(discovery.discover(settings), rcvhwm=100_000,
                        heartbeat_topic=heartbeat.topic(settings.topic_prefix)) as live:
            for i in range(200):  # both joined: each has a probe
                with store.transaction() as tx:
                    tx.add_events([Event("logger", "message", "log", key=f"probe{i}",
                                         body={"probe": i})])
                if list(live.messages(count=1, timeout=0.1)) and stalled.poll(100):
                    break
            while stalled.poll(200):
                stalled.recv_multipart()
            list(live.messages(idle=0.3, timeout=2))
            first = store.last_seq_id() + 1
            with store.transaction() as tx:  # the stalled subscriber reads nothing now
                tx.add_events([Event("logger", "message", "log", key=f"s{i}",
                                     body={"n": i, "pad": PAD}) for i in range(TOTAL)])
            last = first + TOTAL - 1
            live_messages = list(live.messages(count=TOTAL, timeout=60))
            wait_published(settings, last)
            # a reader loses nothing: what it missed live came back by replay (under load
            # its pipe too can stay full for hwm_wait_ms; those misses count as well)
            assert [m.seq_id for m in live_messages] == list(range(first, last + 1))
            live_missed = sum(m.replayed for m in live_messages)
        seen = []
        beats = 0  # heartbeats it received before its first miss: places in its queue too
        in_order = True
        quiet = time.monotonic() + 1.0  # heartbeats go on: stop 1 s after the last message
        while time.monotonic() < quiet and (not seen or seen[-1] < last):
            if stalled.poll(100):
                seq_id = envelope.decode(stalled.recv_multipart()).get("seq_id")
                if seq_id is not None:  # not a heartbeat
                    in_order = in_order and (not seen or seq_id == seen[-1] + 1)
                    seen.append(seq_id)
                    quiet = time.monotonic() + 1.0
                elif in_order:
                    beats += 1
    finally:
        stalled.close(0)
        ctx.destroy(0)
    ours = [s for s in seen if s >= first]
    missed = sorted(set(range(first, last + 1)) - set(ours))
    dropped = store.counters().get("published.dropped", 0)
    print(f"stalled subscriber: received {len(ours)} (and {beats} heartbeats), first miss "
          f"{missed[0] - first if missed else None}, missed {len(missed)}; live subscriber "
          f"missed {live_missed}; published.dropped {dropped}")
    assert missed, "the test must overflow the subscriber's queue"
    # nothing missed before the bound: sndhwm messages queued for it (plus its RCVHWM and
    # the kernel's buffers), received in order; the heartbeats published meanwhile were
    # queued for it as well (a slow run: 13 of them, the first miss 13 early)
    bound = SNDHWM - beats
    assert missed[0] >= first + bound, f"first miss {missed[0] - first}, {beats} heartbeats"
    assert ours[:bound] == list(range(first, first + bound))
    # every miss is counted, the live subscriber's too (an upper estimate: never fewer),
    # and each message at most once per subscriber. Not closer: when the first lossy send
    # finds no bytes queued in the kernel (loopback's receive buffer took them), every
    # connection is suspected, and a reader receiving a steady stream always has bytes
    # in flight, so it stays counted (measured: 15,024 counted for 6,263 missed)
    all_missed = len(missed) + live_missed
    assert all_missed <= dropped <= 2 * TOTAL, (
        f"missed {len(missed)} + {live_missed} (live), published.dropped {dropped}")
    # and replay recovers every one of them
    recovered = [e["seq_id"] for page in replay.pages(
        settings.zmq.replay, {"seq_id_range": [missed[0], missed[-1]]}) for e in page.envelopes]
    assert set(missed) <= set(recovered)
    assert proc.stop() == 0
