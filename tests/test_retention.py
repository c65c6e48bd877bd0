"""Outbox retention: bounded growth, nothing unsent lost, dedup kept, replay and the
subscriber say what was pruned."""

import json
import time

import pytest

from gateway import config, replay, retention, runtime
from gateway.discovery import discover
from gateway.errors import ConfigError
from gateway.event import Event
from gateway.heartbeat import topic as heartbeat_topic
from gateway.store import PUBLISHED_CURSOR
from gateway.subscriber import Subscriber

DAY = 86400


def fill(store, n, start=0, now=1_000_000):
    with store.transaction() as tx:
        return tx.add_events([Event("logger", "message", "log", key=f"k{i}", body={"n": i})
                              for i in range(start, start + n)], now=now)


def sent(store, seq_id, name=PUBLISHED_CURSOR):
    with store.transaction() as tx:
        tx.set_cursor(name, seq_id)


def seq_ids(store):
    return [r[0] for r in store.connect().execute("SELECT seq_id FROM outbox ORDER BY seq_id")]


def state(**kw):
    return config.StateSettings(**kw)


def test_a_disabled_transport_holds_nothing_back(make_settings):
    """AMQP only (zmq.enabled = false): the ZeroMQ cursor never moves, and must not keep
    every row forever; the enabled transports' cursors bound the pruning."""
    store = runtime.open_store(make_settings())
    fill(store, 100)
    sent(store, 90, "publisher.amqp.sent")  # publisher.sent (ZeroMQ) stays at 0
    # every cursor, ZeroMQ's included even before it is first written
    assert retention.prune_once(store, state(outbox_max_rows=10)) == 0
    assert retention.prune_once(store, state(outbox_max_rows=10), transports=["amqp"]) == 90
    assert seq_ids(store) == list(range(91, 101))


def test_defaults_keep_every_row(make_settings):
    store = runtime.open_store(make_settings())
    fill(store, 50)
    sent(store, 50)
    assert not retention.enabled(config.StateSettings())
    assert retention.prune_once(store, config.StateSettings(), now=10**10) == 0
    assert len(seq_ids(store)) == 50


def test_max_rows_prunes_only_what_every_transport_sent(make_settings):
    store = runtime.open_store(make_settings())
    fill(store, 100)
    sent(store, 60)
    assert retention.prune_once(store, state(outbox_max_rows=10), step=7) == 60
    assert seq_ids(store)[0] == 61  # seq_id 61-90 wait for the publisher
    sent(store, 100)
    sent(store, 80, "publisher.amqp.sent")  # another transport is behind: it holds rows
    assert retention.prune_once(store, state(outbox_max_rows=10)) == 20
    assert seq_ids(store) == list(range(81, 101))
    assert store.pruned_seq_id() == 80
    assert store.counters()["outbox.pruned"] == 80


def test_age_prunes_old_rows_but_never_the_newest(make_settings):
    store = runtime.open_store(make_settings())
    fill(store, 10, now=1000)
    fill(store, 10, start=10, now=5 * DAY)
    sent(store, 20)
    assert retention.prune_once(store, state(outbox_max_age_days=2), now=5 * DAY) == 10
    assert seq_ids(store)[0] == 11
    # everything is old: the newest row stays, so seq_id goes on from it
    assert retention.prune_once(store, state(outbox_max_age_days=1), now=100 * DAY) == 9
    assert seq_ids(store) == [20]
    assert fill(store, 1, start=500) == [21]


def test_a_pruned_key_is_not_stored_again_within_the_dedup_window(make_settings):
    store = runtime.open_store(make_settings())
    fill(store, 30, now=1000)
    sent(store, 30)
    settings = state(outbox_max_rows=5, dedup_days=10, dedup_max_keys=100)
    assert retention.prune_once(store, settings, now=2000) == 25
    assert fill(store, 30, now=3000) == []  # all 30 keys known: 25 pruned, 5 in the outbox
    with store.transaction() as tx:
        assert tx.has_key("k3") and tx.has_key("k29") and not tx.has_key("k30")
    # past the window the pruned keys are forgotten (and counted): they are new again
    retention.prune_once(store, settings, now=1000 + 11 * DAY)
    assert store.counters()["outbox.dedup_forgotten"] == 25
    assert fill(store, 2) == [31, 32]


def test_dedup_keys_are_bounded(make_settings):
    store = runtime.open_store(make_settings())
    fill(store, 40, now=1000)
    sent(store, 40)
    retention.prune_once(store, state(outbox_max_rows=1, dedup_max_keys=10), now=2000)
    assert store.connect().execute("SELECT COUNT(*) FROM pruned_uids").fetchone()[0] == 10
    assert fill(store, 1, start=38) == []  # among the newest pruned: still known
    assert fill(store, 1, start=0) == [41]  # the oldest were forgotten first


def test_replay_says_a_seq_id_or_msg_id_was_pruned(make_settings):
    store = runtime.open_store(make_settings())
    fill(store, 20)
    first = json.loads(store.envelopes("seq_id = 1", [], 1)[0])["msg_id"]
    sent(store, 20)
    retention.prune_once(store, state(outbox_max_rows=5), now=1_000_000)
    for query in ({"seq_id": 3}, {"seq_id_range": [1, 10]}, {"seq_ids": [2, 4]}):
        (frame,) = replay.answer(store, json.dumps(query).encode(), 100)
        assert b"pruned by outbox retention" in frame and b"keeps seq_id 16" in frame
    (frame,) = replay.answer(store, json.dumps({"msg_id": first}).encode(), 100)
    assert frame == b"error: 'msg_id pruned by outbox retention'"
    (frame,) = replay.answer(store, b'{"seq_id": 99}', 100)
    assert frame == b"error: 'no messages match'"
    frames = replay.answer(store, b'{"seq_id_range": [1, 20], "paged": true}', 100)
    assert [json.loads(f)["seq_id"] for f in frames[:-1]] == list(range(16, 21))
    assert json.loads(frames[-1])["busgate_replay"]["pruned_seq_id"] == 15


@pytest.mark.parametrize("key", ["outbox_max_rows", "outbox_max_age_days", "dedup_days",
                                 "dedup_max_keys"])
def test_negative_bounds_are_refused(tmp_path, key):
    path = tmp_path / "busgate.toml"
    path.write_text(f"[state]\n{key} = -1\n")
    with pytest.raises(ConfigError, match="0 or more") as err:
        config.load(path)
    assert err.value.key == f"state.{key}"


def test_daemon_prunes_and_a_subscriber_counts_what_replay_cannot_give(daemon,
                                                                      make_settings):
    settings = make_settings()
    store = runtime.open_store(settings)
    fill(store, 300, now=int(time.time()))
    sent(store, 300)  # a previous run published them
    store.close()
    _proc, settings = daemon(state={"dir": settings.state.dir, "outbox_max_rows": 100})
    store = runtime.open_store(settings)
    deadline = time.monotonic() + 10
    while store.pruned_seq_id() != 200:
        assert time.monotonic() < deadline, "the daemon did not prune at start"
        time.sleep(0.05)
    with Subscriber(discover(settings), heartbeat_topic=heartbeat_topic(settings.topic_prefix),
                    resume_from=0) as sub:
        got = [m.seq_id for m in sub.messages(count=100, timeout=10)]
        assert got == list(range(201, 301))  # replayed after the heartbeat showed the gap
        assert sub.stats.pruned == 200 and sub.stats.unrepaired == 0


def recorded(settings, seq_id, epoch=None, publisher=None):
    """The recorder's position in the history database, as the recorder writes it."""
    from gateway.consumer_state import Position

    store = runtime.open_store(settings)
    position = Position(settings.history_path)
    with position.transaction():
        position.advance(publisher or settings.publisher.name,
                         store.epoch() if epoch is None else epoch, seq_id)
    position.close()


def test_rows_the_recorder_has_not_stored_are_kept(make_settings):
    settings = make_settings(history={"enabled": True})
    store = runtime.open_store(settings)
    fill(store, 100)
    sent(store, 100)
    bound = state(outbox_max_rows=10)
    # no history database yet: the recorder has stored nothing, nothing goes
    assert retention.history_floor(settings, store) == 0
    assert retention.prune_once(store, bound, recorded=0) == 0
    recorded(settings, 40)
    assert retention.history_floor(settings, store) == 40
    assert retention.prune_once(store, bound,
                                recorded=retention.history_floor(settings, store)) == 40
    assert seq_ids(store)[0] == 41
    recorded(settings, 95, epoch="an-older-epoch")  # positions of another epoch count 0
    assert retention.history_floor(settings, store) == 0
    recorded(settings, 100, publisher="someone-else")  # nor another publisher's
    assert retention.history_floor(settings, store) == 0
    recorded(settings, 100)
    assert retention.prune_once(store, bound,
                                recorded=retention.history_floor(settings, store)) == 50
    assert seq_ids(store) == list(range(91, 101))


def test_the_recorder_holds_nothing_back_when_told_or_disabled(make_settings):
    for history in ({"enabled": True, "retain_unrecorded": False}, {"enabled": False},
                    {"enabled": True, "amqp_queue": "history"}):
        settings = make_settings(history=history)
        store = runtime.open_store(settings)
        assert retention.history_floor(settings, store) is None
    settings = make_settings(history={"enabled": True, "retain_unrecorded": False})
    store = runtime.open_store(settings)
    assert retention.history_cursor(settings, store) == 0  # still shown by status


def test_status_shows_the_history_cursor(make_settings, tmp_path):
    import subprocess

    from tests.conftest import BUSGATE, REPO

    settings = make_settings(history={"enabled": True})
    store = runtime.open_store(settings)
    fill(store, 30)
    spool = runtime.open_spool(settings)
    spool.root.mkdir(parents=True, exist_ok=True)
    runtime.adopt(settings, store, spool)  # as busgate run does
    recorded(settings, 12)
    env = {"BUSGATE_CONFIG": settings.loaded_from[0], "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*BUSGATE, "status", "--json"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["history"] == {"cursor": 12, "lag": 18}
    done = subprocess.run([*BUSGATE, "status"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert "  history cursor 12 (lag 18)\n" in done.stdout
