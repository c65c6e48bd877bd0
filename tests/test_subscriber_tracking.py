"""The subscriber's per-message decisions (issue 16 made the usual case a short path):
the next seq_id is handed on, a repeat is dropped, a jump is a gap, a new epoch or a
publisher first seen on an endpoint goes the full way, the topic filter holds, and the
caches behind them stay within their bounds. Frames are fed to the subscriber as its
socket loop feeds them; nothing here needs a publisher."""

from __future__ import annotations

import json

import pytest

from gateway import envelope as env
from gateway import subscriber as sub_module
from gateway.discovery import Endpoint
from gateway.subscriber import Subscriber

ENDPOINT = Endpoint("pub", "tcp://127.0.0.1:9", None)  # no replay: gaps stay unrepaired
OTHER = Endpoint("other", "tcp://127.0.0.1:10", None)
TOPIC = "org.debian.dev.svc.obj.done"


def frames(seq: int | None, *, publisher: object = "pub", epoch: object = "e1",
           topic: str = TOPIC) -> list[bytes]:
    envelope = {"topic": topic, "msg": {"n": seq}, "timestamp": 1, "msg_id": f"2026-{seq}",
                "i": 1, "username": "u"}
    if seq is not None:
        envelope["seq_id"] = seq
    if publisher is not None:
        envelope["publisher"] = publisher
    if epoch is not None:
        envelope["publisher_epoch"] = epoch
    return [topic.encode(), json.dumps(envelope, sort_keys=True).encode()]


@pytest.fixture
def subscriber():
    with Subscriber([ENDPOINT, OTHER], topics=["org.debian.dev.svc"],
                    exclude=["org.debian.dev.svc.obj.skip"]) as sub:
        yield sub


def feed(sub: Subscriber, *items: tuple[list[bytes], Endpoint]) -> list[int | None]:
    for item, endpoint in items:
        sub._accept(item, endpoint)
    return [m.seq_id for m in sub.messages(timeout=0)]


def test_in_order_repeats_gaps_and_epochs(subscriber) -> None:
    got = feed(subscriber, *[(frames(n), ENDPOINT) for n in (5, 6, 7, 7, 6, 9, 10)])
    assert got == [5, 6, 7, 9, 10]
    stats = subscriber.stats
    assert (stats.received, stats.duplicates, stats.unrepaired) == (5, 2, 1)
    assert stats.last_seq == {"pub": 10}
    # a new epoch starts again at 1 (not dropped as already seen), then in order
    assert feed(subscriber, (frames(1, epoch="e2"), ENDPOINT),
                (frames(2, epoch="e2"), ENDPOINT)) == [1, 2]
    assert stats.resets == 1 and stats.last_seq == {"pub": 2}
    # the old epoch's next number is not this epoch's: it resets again, never slips through
    feed(subscriber, (frames(3, epoch="e1"), ENDPOINT))
    assert stats.resets == 2


def test_a_publisher_is_tracked_per_name_and_seen_per_endpoint(subscriber) -> None:
    assert feed(subscriber, (frames(1), ENDPOINT), (frames(2), ENDPOINT),
                (frames(3), OTHER), (frames(4), OTHER)) == [1, 2, 3, 4]
    assert subscriber._served == {ENDPOINT.publish: {"pub"}, OTHER.publish: {"pub"}}
    # no publisher field: tracked under the endpoint's name, as before
    assert feed(subscriber, (frames(1, publisher=None), OTHER),
                (frames(2, publisher=None), OTHER), (frames(2, publisher=""), OTHER)) == [1, 2]
    assert subscriber.stats.last_seq == {"pub": 4, "other": 2}
    assert subscriber.stats.duplicates == 1


def test_odd_publisher_and_epoch_fields_take_the_full_way(subscriber) -> None:
    assert feed(subscriber, (frames(1, epoch=None), ENDPOINT), (frames(2, epoch=None), ENDPOINT),
                (frames(3, epoch=7), ENDPOINT), (frames(4, epoch="e9"), ENDPOINT)) == [1, 2, 3, 4]
    assert subscriber._tracks["pub"].epoch == "e9" and subscriber.stats.resets == 0
    assert feed(subscriber, (frames(1, publisher=["x"]), ENDPOINT)) == [1]  # str() of it
    assert "['x']" in subscriber.stats.last_seq


def test_the_topic_filter_and_unsequenced_messages(subscriber) -> None:
    got = feed(subscriber, (frames(1), ENDPOINT),
               (frames(2, topic="org.debian.dev.svc.obj.skip"), ENDPOINT),
               (frames(3, topic="org.debian.dev.other.obj.done"), ENDPOINT),
               (frames(4), ENDPOINT), (frames(None), ENDPOINT))
    assert got == [1, 4, None]
    assert subscriber.stats.received == 5 and subscriber.stats.last_seq == {"pub": 4}


def test_the_filter_cache_is_bounded(subscriber, monkeypatch) -> None:
    monkeypatch.setattr(sub_module, "WANTED_CACHE", 8)
    feed(subscriber, *[(frames(n, topic=f"org.debian.dev.svc.obj{n}.done"), ENDPOINT)
                       for n in range(1, 30)])
    assert 0 < len(subscriber._wanted_cache) <= 8
    assert subscriber.stats.received == 29


def test_the_valid_topic_cache_is_bounded_and_frames_still_checked(monkeypatch) -> None:
    monkeypatch.setattr(env, "VALID_TOPICS_CACHE", 8)
    monkeypatch.setattr(env, "_valid_topics", {})
    for n in range(30):
        topic = f"org.debian.dev.svc.obj{n}.done"
        env.decode(frames(1, topic=topic))
        env.decode(frames(1, topic=topic))  # the cached way
        assert 0 < len(env._valid_topics) <= 8
        with pytest.raises(env.EnvelopeError, match="frame 0"):
            env.decode([b"org.debian.dev.svc.obj.other", frames(1, topic=topic)[1]])
    with pytest.raises(env.EnvelopeError, match="tokens"):
        env.decode(frames(1, topic="org.x"))
    bad = json.dumps({**json.loads(frames(1)[1]), "topic": "org.a.b.c.\udcff.e"}).encode()
    with pytest.raises(env.EnvelopeError, match="not valid Unicode"):
        env.decode([b"x", bad])
