"""The recorder against a real daemon: kill -9 mid-stream and a publisher restart leave
the history equal to the outbox (nothing lost, nothing doubled); backfill; records."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gateway.history import indexfile, records
from gateway.history.store import SqliteHistory
from gateway.messages import Message, TypeIndex
from tests.conftest import BUSGATE, REPO


def publish(env: dict[str, str], text: str) -> None:
    subprocess.run([*BUSGATE, "publish"], input=text, text=True, env=env, cwd=REPO,
                   check=True, timeout=60)


def lines(word: str, n: int) -> str:  # distinct texts: the same text twice is one event
    return "".join(f"{word} {i}\n" for i in range(n))


def outbox(settings) -> list[str]:
    with sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT msg_id FROM outbox ORDER BY seq_id")]


def history(path: Path) -> list[str]:
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=5)
    try:
        return [row[0] for row in db.execute("SELECT msg_id FROM messages ORDER BY id")]
    except sqlite3.OperationalError:  # not migrated yet
        return []
    finally:
        db.close()


def start_recorder(env: dict[str, str], config: str, db: Path | str, delay: str, *more: str):
    proc = subprocess.Popen([sys.executable, "-m", "tests.history_proc", config, str(db),
                             delay, *more], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", proc.stderr.read() if proc.stderr else line
    return proc


def wait_for(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_kill9_and_publisher_restart_leave_history_equal_to_outbox(daemon, tmp_path):
    proc, settings = daemon()
    config = settings.loaded_from[0]
    db = tmp_path / "history.sqlite"
    publish(proc.env, lines("before", 100))
    wait_for(lambda: len(outbox(settings)) == 100)
    # backfill: the recorder's past, and its position past it
    done = subprocess.run([*BUSGATE, "record", "--backfill", "--database", str(db)],
                          env=proc.env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "backfilled 100 new of 100" in done.stdout
    assert history(db) == outbox(settings)

    recorder = start_recorder(proc.env, config, db, "0.001")
    try:
        publish(proc.env, lines("live", 800))  # the recorder needs > 0.8 s
        wait_for(lambda: len(history(db)) >= 250, 20)
        assert len(history(db)) < len(outbox(settings)), "killed too late to matter"
        recorder.send_signal(signal.SIGKILL)  # mid-stream
        recorder.wait(10)
        publish(proc.env, lines("down", 300))  # while the recorder is dead
        recorder = start_recorder(proc.env, config, db, "0")
        wait_for(lambda: len(history(db)) == 1200)
        proc.stop()  # the publisher restarts; the recorder stays
        publish(proc.env, lines("offline", 100))  # spooled while the daemon is down
        proc.start()
        publish(proc.env, lines("after", 100))
        wait_for(lambda: len(outbox(settings)) == 1400)
        want = outbox(settings)
        assert len(want) == 1400
        wait_for(lambda: len(history(db)) >= len(want))
        time.sleep(0.3)  # anything doubled or late would come now
        got = history(db)
    finally:
        recorder.kill()
        recorder.wait(10)
    assert got == want  # all of them, once each, in outbox order
    with sqlite3.connect(db) as conn:
        (texts,) = conn.execute("SELECT COUNT(*) FROM messages_fold").fetchone()
        (seq,) = conn.execute("SELECT seq_id FROM position").fetchone()
    assert texts == len(want)  # the texts were not written twice either
    assert seq == len(want)
    SqliteHistory(db).close()  # a writer's open fills the index with what the kills left
    with sqlite3.connect(indexfile.index_path(db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages_text").fetchone() == (texts,)


def test_backfill_twice_adds_nothing_and_never_moves_the_position_back(daemon, tmp_path):
    proc, settings = daemon()
    db = tmp_path / "h.sqlite"
    publish(proc.env, lines("x", 30))
    wait_for(lambda: len(outbox(settings)) == 30)
    args = [*BUSGATE, "record", "--backfill", "--database", str(db)]
    first = subprocess.run(args, env=proc.env, cwd=REPO, capture_output=True, text=True,
                           timeout=60)
    again = subprocess.run(args, env=proc.env, cwd=REPO, capture_output=True, text=True,
                           timeout=60)
    assert "backfilled 30 new of 30" in first.stdout, first.stderr
    assert "backfilled 0 new of 30" in again.stdout, again.stderr
    assert history(db) == outbox(settings)
    with sqlite3.connect(indexfile.index_path(db)) as conn:  # contains finds them all
        assert conn.execute("SELECT upto FROM index_state").fetchone() == (30,)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE position SET seq_id = 1000")  # a recorder went further
    subprocess.run(args, env=proc.env, cwd=REPO, check=True, capture_output=True, timeout=60)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT seq_id FROM position").fetchone() == (1000,)


def test_record_of_takes_service_users_packages_and_unicode_text(tmp_path):
    envelope = {"topic": "org.debian.dev.dak.upload.accepted", "msg": {"who": "Jörg"},
                "msg_id": "2026-a", "timestamp": 5, "i": 1, "username": "u", "seq_id": 3,
                "publisher": "p", "headers": {"fedora_messaging_user_jorg": True,
                                              "busgate_package_hebcal": True,
                                              "busgate_package_" + "x" * 200: True}}
    rec = records.record_of(envelope, TypeIndex(()))
    assert (rec.category, rec.users, rec.packages) == ("dak", ("jorg",), ("hebcal",))
    assert "Jörg" in rec.text and rec.seq_id == 3
    assert records.category("org.debian") == records.UNCLASSIFIED
    store = SqliteHistory(tmp_path / "h.sqlite")
    db = store.writer()
    assert store.add(db, rec) is True
    assert store.add(db, rec) is False  # once by msg_id
    assert store.msg_ids() == ["2026-a"]
    store.close()


def test_busgate_run_records_when_history_is_enabled(daemon, tmp_path):
    db = tmp_path / "inside.sqlite"
    proc, settings = daemon(history={"enabled": True, "database": str(db)})
    publish(proc.env, lines("inside", 50))
    wait_for(lambda: len(outbox(settings)) == 50)
    wait_for(lambda: len(history(db)) == 50, 20)
    assert history(db) == outbox(settings)
    assert proc.stop() == 0  # the recorder thread stops with the daemon


class _Uploader(Message):
    """A reader's type that names the body's ``who`` as a user."""

    name = "test.upload.v1"
    topic_tokens = ("dak", "upload")

    @property
    def usernames(self) -> list[str]:
        return [self.body["who"]]


def test_record_of_takes_a_typed_publisher_at_its_headers_word():
    index = TypeIndex([_Uploader])
    head = {"fedora_messaging_user_alice": True, "busgate_package_hebcal": True}
    envelope = {"topic": "org.debian.dev.dak.upload", "msg": {"who": "bob"},
                "msg_id": "2026-b", "timestamp": 5, "i": 1, "username": "u",
                "headers": {**head, "fedora_messaging_schema": "test.upload.v1"}}
    # the publisher typed it: its headers are the names (the reader's type not asked)
    assert records.record_of(envelope, index).users == ("alice",)
    # no schema, or the base one: the reader's type adds what it sees in the body
    for headers in (head, {**head, "fedora_messaging_schema": "base.message"}):
        rec = records.record_of({**envelope, "headers": headers}, index)
        assert (rec.users, rec.packages) == (("alice", "bob"), ("hebcal",))
    # the bounds hold on the header path too: 64 names at most, none too long
    many = {f"fedora_messaging_user_u{n}": True for n in range(100)}
    many["fedora_messaging_user_" + "x" * 200] = True
    rec = records.record_of({**envelope, "headers": {**many, "fedora_messaging_schema":
                                                     "test.upload.v1"}}, index)
    assert rec.users == tuple(f"u{n}" for n in range(64))
