"""Outbox retention: bounded growth, nothing unsent lost, dedup kept, replay and the
subscriber say what was pruned."""

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from gateway import config, dedup, replay, retention, runtime
from gateway.discovery import discover
from gateway.envelope import event_uid
from gateway.errors import ConfigError
from gateway.event import Event
from gateway.heartbeat import topic as heartbeat_topic
from gateway.store import PUBLISHED_CURSOR
from gateway.subscriber import Subscriber

DAY = 86400
RUN = 1 << dedup.RUN_BITS  # pruned keys are kept, and forgotten, a run at a time
#: main when pruned keys were still keyed by uid alone (schema v3): the migration test
#: builds its file with that code
V3_COMMIT = "4487b54fbf6acba319df4614ed36e060bb37c3ed"


def fill(store, n, start=0, now=1_000_000):
    with store.transaction() as tx:
        return tx.add_events([Event("logger", "message", "log", key=f"k{i}", body={"n": i})
                              for i in range(start, start + n)], now=now)


def sent(store, seq_id, name=PUBLISHED_CURSOR):
    with store.transaction() as tx:
        tx.set_cursor(name, seq_id)


def jump(store, seq_id, now=1_000_000):
    """A row at ``seq_id`` (the next ones follow it): many runs without 65,536 rows each."""
    with store.transaction() as tx:
        tx._conn.execute(
            "INSERT INTO outbox (seq_id, uid, key, msg_id, topic, timestamp, envelope)"
            " VALUES (?, ?, ?, '', 't', ?, '{}')",
            (seq_id, event_uid(f"pad{seq_id}"), f"pad{seq_id}", now))


def pruned_runs(store):
    return store.connect().execute("SELECT run, keys, newest FROM pruned_runs").fetchall()


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


def test_dedup_keys_are_bounded_a_run_at_a_time(make_settings):
    """dedup_max_keys: the oldest runs go while the newer ones still hold that many keys,
    so the newest dedup_max_keys pruned keys are always known, and at most a run more."""
    store = runtime.open_store(make_settings())
    for run in range(4):  # run r: its pad row and k<10r> .. k<10r+4>
        jump(store, run * RUN + 1, now=1000)
        fill(store, 5, start=10 * run, now=1000)
    sent(store, 3 * RUN + 6)
    retention.prune_once(store, state(outbox_max_rows=1, dedup_max_keys=10), now=2000,
                         step=10**9)  # seq_ids with gaps: one step
    # runs 0 and 1 went (6 keys each): runs 2 and 3 hold 11, without run 2 only 5
    assert pruned_runs(store) == [(2, 6, 1000), (3, 5, 1000)]
    assert store.connect().execute("SELECT COUNT(*) FROM pruned_uids").fetchone()[0] == 11
    assert store.counters()["outbox.dedup_forgotten"] == 12
    assert fill(store, 1, start=20) == []  # the oldest kept key (run 2): still known
    assert fill(store, 2, start=13) == [3 * RUN + 7, 3 * RUN + 8]  # run 1: forgotten
    # the filters hold every run still: group 0 covers runs 0-63 and stays
    assert [r[0] for r in store.connect().execute("SELECT grp FROM dedup_filters")] == [0]


def test_dedup_days_forget_a_run_once_all_its_keys_are_old(make_settings):
    store = runtime.open_store(make_settings())
    fill(store, 5, now=DAY)  # run 0: k0-k4
    jump(store, RUN, now=DAY)
    fill(store, 3, start=10, now=DAY)  # run 1: k10-k12 old, k13-k14 newer
    fill(store, 2, start=13, now=3 * DAY)
    jump(store, 2 * RUN, now=3 * DAY)
    fill(store, 2, start=20, now=3 * DAY)  # run 2
    sent(store, 2 * RUN + 2)
    settings = state(outbox_max_rows=1, dedup_days=1)
    retention.prune_once(store, settings, now=int(2.5 * DAY), step=10**9)  # forget before 1.5 days
    assert pruned_runs(store) == [(1, 6, 3 * DAY), (2, 2, 3 * DAY)]
    assert fill(store, 3, start=9, now=3 * DAY) == [2 * RUN + 3]  # k9 was never there
    assert fill(store, 1, start=0, now=3 * DAY) == [2 * RUN + 4]  # run 0: forgotten
    assert fill(store, 1, start=11, now=3 * DAY) == []  # older than a day, run 1 kept
    retention.prune_once(store, settings, now=5 * DAY, step=10**9)
    assert pruned_runs(store) == []
    assert fill(store, 2, start=12, now=5 * DAY) == [2 * RUN + 5, 2 * RUN + 6]


def test_a_key_pruned_long_ago_is_refused_through_its_filter(make_settings):
    """A key pruned 70 runs (4.6M seq_ids) ago, within dedup_days: the filter of its
    group outlives the rows, so it is looked up in pruned_uids and refused."""
    store = runtime.open_store(make_settings())
    fill(store, 10, now=DAY)
    for run in range(1, 71):
        jump(store, run * RUN, now=DAY)
    fill(store, 3, start=100, now=DAY)
    sent(store, 70 * RUN + 3)
    assert retention.prune_once(store, state(outbox_max_rows=2, dedup_days=60),
                                now=50 * DAY, step=10**9) == 10 + 70 + 1
    assert store.connect().execute("SELECT grp, upto_run FROM dedup_filters").fetchall() \
        == [(0, 64), (1, 70)]
    assert store.connect().execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 2
    assert fill(store, 12, now=50 * DAY) == [70 * RUN + 4, 70 * RUN + 5]  # k10, k11
    with store.transaction() as tx:
        assert tx.has_key("k0") and tx.has_key("pad65536") and not tx.has_key("k12")


BUILD_V3 = """
import sys
from gateway import config, retention
from gateway.event import Event
from gateway.store import EnvelopeFactory, Store
store = Store(sys.argv[1], EnvelopeFactory("org.test.dev", "test", "tester"))
def add(names, now):
    with store.transaction() as tx:
        return tx.add_events([Event("logger", "message", "log", key=f"k{n}", body={})
                              for n in names], now=now)
add(range(10), 1000)  # run 0
with store.transaction() as tx:  # run 69: main's retention drops group 0's filter
    tx._conn.execute("INSERT INTO outbox (seq_id, uid, key, msg_id, topic, timestamp,"
                     " envelope) VALUES (?, zeroblob(16), 'pad', '', 't', 1500, '{}')",
                     (69 * 65536,))
add(range(10, 20), 2000)
with store.transaction() as tx:
    tx.set_cursor("publisher.sent", 10**9)
retention.prune_once(store, config.StateSettings(outbox_max_rows=3), now=3000,
                     step=10**9)
assert store.connect().execute("PRAGMA user_version").fetchone() == (3,)
print(store.pruned_seq_id())
"""


def test_a_v3_file_with_pruned_keys_migrates(tmp_path):
    """A state file main wrote (schema v3: pruned_uids keyed by uid, the filters of
    pruned groups dropped) keeps every pruned key, by run, in the filters again."""
    from tests.conftest import REPO

    old = tmp_path / "v3"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", V3_COMMIT, "gateway"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    path = tmp_path / "state" / "busgate.sqlite"
    path.parent.mkdir()
    built = subprocess.run([sys.executable, "-c", BUILD_V3, str(path)], cwd=old,
                           env={"PYTHONPATH": str(old), "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    upto = 69 * RUN + 7
    assert int(built.stdout) == upto  # k0-k9, the pad row, k10-k16 pruned
    with sqlite3.connect(path) as raw:
        keys = sorted(raw.execute("SELECT seq_id >> 16, uid FROM pruned_uids"))
        assert len(keys) == 18
        assert raw.execute("SELECT grp FROM dedup_filters").fetchall() == [(1,)]
    raw.close()
    store = runtime.open_store(config.Settings(state=state(dir=str(path.parent))))
    conn = store.connect()
    assert conn.execute("PRAGMA user_version").fetchone() == (4,)
    assert conn.execute("SELECT run, uid FROM pruned_uids").fetchall() == keys
    assert pruned_runs(store) == [(0, 10, 1000), (69, 8, 2000)]
    assert conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'pruned_uids%'"
                        " ORDER BY 1").fetchall() == [("pruned_uids",)]
    assert conn.execute("SELECT grp, upto_run FROM dedup_filters").fetchall() \
        == [(0, 64), (1, 69)]
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert store.pruned_seq_id() == upto and store.last_seq_id() == upto + 3
    assert fill(store, 22, now=4000) == [upto + 4, upto + 5]  # k20, k21: the rest known
    with store.transaction() as tx:  # expiry works on the migrated runs
        assert tx.forget_pruned(1500, 10**9) == 10
    assert fill(store, 1, start=3, now=4000) == [upto + 6]


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


def test_pruning_does_not_zero_freed_pages_and_restores_the_setting(make_settings):
    """Retention deletes with secure_delete=FAST (zeroing the freed pages wrote them
    again), only for its own deletes: the connection's setting is put back."""
    store = runtime.open_store(make_settings())
    conn = store.connect()
    conn.execute("PRAGMA secure_delete=1")
    seen = []
    conn.set_trace_callback(seen.append)
    try:
        fill(store, 30)
        sent(store, 30)
        assert retention.prune_once(store, state(outbox_max_rows=5, dedup_max_keys=0)) == 25
    finally:
        conn.set_trace_callback(None)
    assert "PRAGMA secure_delete=FAST" in seen
    assert conn.execute("PRAGMA secure_delete").fetchone() == (1,)
