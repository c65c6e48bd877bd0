"""The consumer base against a real daemon: resume after kill -9 with nothing lost or
doubled, topic/user/package filters, signature refusals and callback errors counted."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway import consumer_state
from gateway.consumer import Consumer, Delivery, Filters, StopConsumer
from gateway.messages import TypeIndex
from tests import tail_types
from tests.conftest import BUSGATE, REPO


def publish(env: dict[str, str], *args: str, text: str = "") -> None:
    subprocess.run([*BUSGATE, "publish", *args], input=text, text=True, env=env, cwd=REPO,
                   check=True, timeout=60)


def outbox(settings) -> list[str]:
    with sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT msg_id FROM outbox ORDER BY seq_id")]


def seen(path: Path) -> list[str]:
    if not path.exists():
        return []
    with sqlite3.connect(path, timeout=5) as db:
        try:
            return [row[0] for row in db.execute("SELECT msg_id FROM seen ORDER BY rowid")]
        except sqlite3.OperationalError:  # not created yet
            return []


def start_consumer(env: dict[str, str], config: str, state: Path, delay: str,
                   batch: int = 1):
    proc = subprocess.Popen([sys.executable, "-m", "tests.consumer_proc", config, str(state),
                             "rec", delay, str(batch)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", proc.stderr.read() if proc.stderr else line
    return proc


@pytest.mark.parametrize("batch", [1, 500], ids=["per-message", "batched"])
def test_resume_after_kill9_loses_nothing_and_doubles_nothing(daemon, tmp_path, batch):
    proc, settings = daemon()
    state = tmp_path / "consumers"
    config = settings.loaded_from[0]
    path = consumer_state.path_for(state, "rec")
    def lines(word: str) -> str:  # distinct texts: the same text twice is one event
        return "".join(f"{word} {i}\n" for i in range(800))

    consumer = start_consumer(proc.env, config, state, "0.001", batch)
    try:
        for round_ in range(2):
            publish(proc.env, text=lines(f"event{round_}"))  # the consumer needs > 0.8 s
            deadline = time.monotonic() + 20
            while len(seen(path)) < 100 + 800 * 2 * round_ and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(seen(path)) < len(outbox(settings)), "killed too late to matter"
            consumer.send_signal(signal.SIGKILL)  # mid-stream
            consumer.wait(10)
            publish(proc.env, text=lines(f"down{round_}"))
            consumer = start_consumer(proc.env, config, state, "0.001", batch)
        publish(proc.env, text=lines("after"))
        deadline = time.monotonic() + 30
        while len(want := outbox(settings)) < 5 * 800 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(want) == 5 * 800
        while len(seen(path)) < len(want) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # anything doubled would come now
        got = seen(path)
    finally:
        consumer.kill()
        consumer.wait(10)
    assert len(got) == len(set(got)), "a message was handled twice"
    assert got == want  # all of them, in outbox order
    positions = consumer_state.Position(path).load()
    assert [seq for _epoch, seq in positions.values()] == [len(want)]


@pytest.fixture
def typed_daemon(daemon, tmp_path, monkeypatch):
    site = tail_types.register(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(REPO)]))
    return daemon


def test_filters_by_topic_user_and_package_and_counts(typed_daemon, tmp_path):
    proc, settings = typed_daemon()
    filters = Filters.build(settings.topic_prefix, topics=["tailtest"],
                            exclude=["tailtest.upload.noisy"], users=["alice,carol"],
                            packages=["hebcal"])
    with Consumer(settings, filters=filters, index=TypeIndex(tail_types.TYPES),
                  name="filtered", state_dir=tmp_path / "c") as consumer:
        for n in range(3):
            uploads = [{"user": user, "package": package, "version": f"{n}.0-1"}
                       for user, package in (("alice", "hebcal"), ("bob", "hebcal"),
                                             ("carol", "dpkg"), ("carol", "hebcal"))]
            publish(proc.env, "--json-input", "--modname", "tailtest", "--topic",
                    "upload.done", text="".join(json.dumps(u) + "\n" for u in uploads))
            publish(proc.env, "--json-input", "--modname", "tailtest", "--topic",
                    "upload.noisy", text=json.dumps(uploads[0]) + "\n")
            publish(proc.env, "--message", "alice hebcal")
        got = [d.envelope["msg"] for d in consumer.messages(count=6, timeout=20)]
        # What the filters let through comes on its own; the rest is only counted.
        assert [(m["user"], m["version"]) for m in got] == [
            (u, f"{n}.0-1") for n in range(3) for u in ("alice", "carol")]
        assert all(m["package"] == "hebcal" for m in got)
        assert not list(consumer.messages(timeout=1.0))
        counters = consumer.counters.as_dict()
    assert counters == {"received": 12, "delivered": 6, "filtered": 6, "rejected": {},
                        "errors": 0}
    # Filtered messages move the position too: the last upload.done (seq_id 16 of 18).
    position = consumer_state.Position(consumer_state.path_for(tmp_path / "c", "filtered"))
    assert [seq for _epoch, seq in position.load().values()] == [16]


def test_refused_signatures_are_counted_by_reason_and_never_delivered(daemon, tmp_path):
    from tests.signing_helpers import make_pki

    pki = make_pki(tmp_path / "pki")
    proc, settings = daemon()  # publishes unsigned
    refused: list[str] = []
    from gateway.verify import Verifier

    verifier = Verifier(ca=str(pki.ca), crl=str(pki.crl))
    with Consumer(settings, verifier=verifier,
                  on_reject=lambda _e, env, exc: refused.append(exc.reason)) as consumer:
        publish(proc.env, text="".join(f"unsigned {i}\n" for i in range(5)))
        assert list(consumer.messages(timeout=1.5)) == []
        # live and heartbeats, and each message again when a gap repair fetches it
        assert consumer.counters.rejected.get("unsigned", 0) >= 5
        assert consumer.counters.delivered == 0
        assert set(refused) == {"unsigned"}


@pytest.mark.parametrize("batch", [1, 100], ids=["per-message", "batched"])
def test_callback_errors_are_counted_rolled_back_and_not_fatal(daemon, tmp_path, caplog,
                                                                batch):
    proc, settings = daemon()
    with Consumer(settings, name="flaky", state_dir=tmp_path / "c", batch=batch) as consumer:
        assert consumer.position is not None
        consumer.position.db.execute("CREATE TABLE kept (seq_id INTEGER)")
        publish(proc.env, text="".join(f"m {i}\n" for i in range(10)))

        def callback(delivery: Delivery) -> None:
            assert delivery.db is not None
            delivery.db.execute("INSERT INTO kept VALUES (?)", (delivery.seq_id,))
            if delivery.seq_id == 10:
                raise StopConsumer
            if delivery.seq_id % 3 == 0:
                raise RuntimeError(f"poison {delivery.seq_id}")

        handled = consumer.run(callback, timeout=20)
        kept = [r[0] for r in consumer.position.db.execute("SELECT seq_id FROM kept")]
    assert handled == 10
    assert consumer.counters.errors == 3
    assert kept == [1, 2, 4, 5, 7, 8, 10]  # a failed callback's rows are rolled back
    assert "the callback failed on org.debian.dev.logger.message.log seq_id 3" in caplog.text
    position = consumer_state.Position(consumer_state.path_for(tmp_path / "c", "flaky"))
    assert [seq for _epoch, seq in position.load().values()] == [10]


def test_a_batch_commits_at_its_size_or_its_time_whichever_first(daemon, tmp_path):
    proc, settings = daemon()
    sizes: list[tuple[int, float]] = []
    with Consumer(settings, name="batch", state_dir=tmp_path / "c", batch=40,
                  batch_seconds=0.3) as consumer:
        assert consumer.position is not None
        db = consumer.position.db
        db.execute("CREATE TABLE kept (seq_id INTEGER)")
        opened: list[float] = []

        def before_commit(conn: sqlite3.Connection) -> None:
            assert conn.in_transaction
            done = sum(n for n, _ in sizes)
            (rows,) = conn.execute("SELECT COUNT(*) FROM kept").fetchone()
            sizes.append((rows - done, time.monotonic() - opened[-1]))

        consumer.before_commit = before_commit
        publish(proc.env, text="".join(f"m {i}\n" for i in range(100)))

        def fast(delivery: Delivery) -> None:
            if delivery.db is None:  # not in a batch: nothing to check
                return
            if not opened or len(opened) == len(sizes):
                opened.append(time.monotonic())
            assert delivery.batched
            delivery.db.execute("INSERT INTO kept VALUES (?)", (delivery.seq_id,))

        assert consumer.run(fast, count=100, timeout=30) == 100
        assert 40 in [n for n, _ in sizes]  # by size while they come fast
        assert all(n <= 40 for n, _ in sizes)
        slow_from = len(sizes)
        publish(proc.env, text="".join(f"slow {i}\n" for i in range(30)))

        def slow(delivery: Delivery) -> None:
            fast(delivery)
            time.sleep(0.05)

        assert consumer.run(slow, count=30, timeout=30) == 30
        kept = [r[0] for r in db.execute("SELECT seq_id FROM kept ORDER BY seq_id")]
    assert kept == list(range(1, 131))
    slow_batches = sizes[slow_from:]
    assert len(slow_batches) >= 3  # by time: 0.3 s holds about 6 of them, never 40
    assert all(n < 40 for n, _ in slow_batches)
    assert all(held < 0.3 + 0.5 for _, held in slow_batches)  # one slow message past it
    position = consumer_state.Position(consumer_state.path_for(tmp_path / "c", "batch"))
    assert [seq for _epoch, seq in position.load().values()] == [130]


def test_batch_bounds_are_refused(make_settings, tmp_path):
    settings = make_settings()
    for batch, seconds in ((0, 0.1), (10, 0.0), (10, 60.0)):
        with pytest.raises(ValueError, match="batch"):
            Consumer(settings, name="b", state_dir=tmp_path, endpoints=[], batch=batch,
                     batch_seconds=seconds)


def test_not_handled_keeps_the_position_before_the_message(daemon, tmp_path):
    from gateway.consumer import NotHandled

    proc, settings = daemon()
    seen: list[int] = []

    def store_down_at_4(delivery: Delivery) -> None:
        if delivery.seq_id == 4:
            raise NotHandled("store down")
        seen.append(delivery.seq_id)  # type: ignore[arg-type]

    with Consumer(settings, name="picky", state_dir=tmp_path / "c") as consumer, \
            pytest.raises(NotHandled):
        publish(proc.env, text="".join(f"n {i}\n" for i in range(6)))
        consumer.run(store_down_at_4, timeout=20)
    position = consumer_state.Position(consumer_state.path_for(tmp_path / "c", "picky"))
    assert [seq for _epoch, seq in position.load().values()] == [3]
    position.close()
    with Consumer(settings, name="picky", state_dir=tmp_path / "c") as consumer:
        consumer.run(lambda d: seen.append(d.seq_id), count=3, timeout=20)
    assert seen == [1, 2, 3, 4, 5, 6]  # 4 came again, by replay


def test_position_file_bounds_and_names(tmp_path):
    with pytest.raises(consumer_state.PositionError, match="must match"):
        consumer_state.path_for(tmp_path, "../escape")
    position = consumer_state.Position(tmp_path / "p.sqlite")
    with position.transaction():
        for n in range(consumer_state.MAX_PUBLISHERS):
            position.advance(f"pub{n}", "e", 1)
    with pytest.raises(consumer_state.PositionError, match="MAX_PUBLISHERS"), \
            position.transaction():
        position.advance("one-more", "e", 1)
    assert len(position.load()) == consumer_state.MAX_PUBLISHERS


@pytest.mark.parametrize(("stale_epoch", "want"), [(False, [4, 5]), (True, [1, 2, 3, 4, 5])])
def test_a_resumed_consumer_replays_after_its_position_or_all_of_a_new_epoch(
        daemon, tmp_path, stale_epoch, want):
    from gateway import runtime

    proc, settings = daemon()
    publish(proc.env, text="".join(f"before {i}\n" for i in range(5)))
    wait_published(settings, 5)
    store = runtime.open_store(settings, create=False)
    epoch = "wiped-state-epoch" if stale_epoch else store.epoch()
    store.close()
    position = consumer_state.Position(consumer_state.path_for(tmp_path / "c", "late"))
    with position.transaction():
        position.advance(settings.publisher.name, epoch, 3)
    position.close()
    with Consumer(settings, name="late", state_dir=tmp_path / "c") as consumer:
        got = [(d.seq_id, d.replayed) for d in consumer.messages(count=len(want), timeout=10)]
        assert not list(consumer.messages(timeout=0.7))
    assert got == [(seq, True) for seq in want]


def test_a_named_consumer_stopped_before_any_message_resumes_from_its_first_start(
        daemon, tmp_path):
    """Its position is where the publisher stood when it first subscribed, so what was
    published while it was down comes by replay, though it had handled nothing."""
    proc, settings = daemon()
    publish(proc.env, text="old\n")  # before the first start: not this consumer's
    wait_published(settings, 1)
    with Consumer(settings, name="fresh", state_dir=tmp_path / "c") as consumer:
        assert not list(consumer.messages(timeout=0.3))
    publish(proc.env, text="while down 1\nwhile down 2\n")
    wait_published(settings, 3)
    with Consumer(settings, name="fresh", state_dir=tmp_path / "c") as consumer:
        got = [(d.envelope["msg"]["log"], d.replayed)
               for d in consumer.messages(count=2, timeout=10)]
        assert not list(consumer.messages(timeout=0.5))
    assert got == [("while down 1", True), ("while down 2", True)]


def wait_published(settings, seq_id: int) -> None:
    from gateway import runtime

    store = runtime.open_store(settings, create=False)
    try:
        deadline = time.monotonic() + 10
        while store.published_seq_id() < seq_id and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.published_seq_id() >= seq_id
    finally:
        store.close()
