"""End to end through a real ``busgate run``: spool -> outbox -> ZeroMQ -> subscriber."""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import time

from gateway import discovery, heartbeat, runtime
from gateway.subscriber import Subscriber
from tests.conftest import BUSGATE, REPO, adopt


def publish(proc, lines: list[str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BUSGATE, "publish", *extra], input="\n".join(lines) + "\n",
                          text=True, capture_output=True, env=proc.env, cwd=REPO, timeout=30)


def subscriber(settings, **kw) -> Subscriber:
    return Subscriber(discovery.discover(settings),
                      heartbeat_topic=heartbeat.topic(settings.topic_prefix), **kw)


def wait_subscribed(proc, settings, sub: Subscriber) -> None:
    """Publish a probe until the subscriber sees one (no sleeps for slow joiners)."""
    for attempt in range(50):
        assert publish(proc, [f"probe {attempt}"], "--topic", "probe.ping").returncode == 0
        seen = list(sub.messages(count=1, timeout=0.2))
        if seen:
            # Joined. Probes published before it may still be on their way: read up to
            # the last one, so the test's own messages come first from here on.
            last = {"log": f"probe {attempt}"}
            if seen[0].body == last:
                return
            for message in sub.messages(timeout=10):
                if message.body == last:
                    return
            raise AssertionError(f"{last} never arrived after the subscriber joined")
    raise AssertionError("subscriber never saw a message")


def test_publish_reaches_a_subscriber_in_order(daemon):
    proc, settings = daemon()
    with subscriber(settings) as sub:
        wait_subscribed(proc, settings, sub)
        result = publish(proc, [f"line {i}" for i in range(200)])
        assert result.returncode == 0, result.stderr
        got = list(sub.messages(count=200, timeout=10))
    assert [m.body["log"] for m in got] == [f"line {i}" for i in range(200)]
    seqs = [m.seq_id for m in got]
    assert seqs == list(range(seqs[0], seqs[0] + 200))
    assert {m.topic for m in got} == {"org.debian.dev.logger.message.log"}
    assert all(m.envelope["publisher"] == "busgate" for m in got)
    assert proc.stop() == 0
    assert "busgate stopped" in proc.output()


def test_json_input_and_topic_options(daemon):
    proc, settings = daemon()
    with subscriber(settings, topics=["org.debian.dev.myapp.package"]) as sub:
        wait_probe = publish(proc, ['{"source": "probe"}'], "--modname", "myapp", "--topic",
                             "package.accept", "--json-input")
        assert wait_probe.returncode == 0
        first = list(sub.messages(count=1, timeout=10))
        assert first and first[0].body == {"source": "probe"}
        bad = publish(proc, ['{"ok": 1}', "[1, 2]"], "--json-input")
        assert bad.returncode == 65 and "message 2" in bad.stderr
        bad_topic = publish(proc, ["x"], "--topic", "Package.Accept")
        assert bad_topic.returncode == 65 and "lowercase" in bad_topic.stderr


def test_subscriber_that_was_away_gets_everything_by_replay(daemon):
    proc, settings = daemon()
    with subscriber(settings) as sub:
        wait_subscribed(proc, settings, sub)
        assert publish(proc, ["before"]).returncode == 0
        (seen,) = list(sub.messages(count=1, timeout=10))
    last = seen.seq_id
    assert publish(proc, [f"while away {i}" for i in range(300)]).returncode == 0
    time.sleep(0.3)
    # A new subscriber resuming from the last seq_id it handled: the first heartbeat
    # reveals the gap at the tail, and replay fills it without any new live message.
    with subscriber(settings, resume_from=last) as sub:
        got = list(sub.messages(count=300, timeout=10))
        assert sub.stats.replayed == 300
    assert [m.body["log"] for m in got] == [f"while away {i}" for i in range(300)]
    assert all(m.replayed for m in got)


def test_rcvhwm_overflow_is_repaired_by_replay(daemon):
    proc, settings = daemon(zmq={"sndhwm": 20, "hwm_wait_ms": 5})
    total = 4000
    pad = "x" * 4000  # 16 MB in all: more than loopback TCP buffers hold
    with subscriber(settings, rcvhwm=20) as sub:
        wait_subscribed(proc, settings, sub)
        assert publish(proc, [f"m{i} {pad}" for i in range(total)]).returncode == 0
        time.sleep(1.5)  # not reading: queues fill, the publisher drops for us
        got = list(sub.messages(count=total, timeout=30))
        replayed = sub.stats.replayed
    assert [m.body["log"] for m in got] == [f"m{i} {pad}" for i in range(total)]
    assert replayed > 0
    counters = runtime.open_store(settings).counters()
    assert counters.get("published.dropped", 0) > 0


def test_malformed_spool_items_are_quarantined_and_nothing_else_is_lost(daemon):
    proc, settings = daemon()
    spool = runtime.open_spool(settings)
    spool.deliver("events", b'{"service": "x"}\n')  # lacks fields
    spool.deliver("events", b"\x00\xff\xfe binary junk")
    spool.deliver("events", b'{"service": "logger", "object": "message", "event": "log",'
                            b' "key": "ok-1", "body": {"log": "fine"}}\n')
    deadline = time.monotonic() + 10
    store = runtime.open_store(settings)
    while time.monotonic() < deadline and (spool.pending() or store.published_seq_id() < 1):
        time.sleep(0.05)
    status = store.status()
    assert status["quarantine"] == {"error": 2}
    assert status["last_seq_id"] == 1 and status["published_seq_id"] == 1
    listed = subprocess.run([*BUSGATE, "reprocess", "--list"], env=proc.env, cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    assert "lacks field 'object'" in listed and "not a JSON event record" in listed
    out = subprocess.run([*BUSGATE, "status"], env=proc.env, cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert "quarantine      2 (error 2)" in out
    again = subprocess.run([*BUSGATE, "reprocess", "--all"], env=proc.env, cwd=REPO,
                           capture_output=True, text=True)
    assert again.returncode == 65 and again.stdout.count("still error") == 2
    assert proc.proc.poll() is None, "the daemon must keep running"


def test_port_in_use_is_a_clear_error(daemon, make_settings, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = make_settings(zmq={"publish": f"tcp://127.0.0.1:{port}"})
        env = {"BUSGATE_CONFIG": settings.loaded_from[0], "PATH": "/usr/bin:/bin"}
        result = subprocess.run([*BUSGATE, "run"], env=env, cwd=REPO, capture_output=True,
                                text=True, timeout=20)
    assert result.returncode == 69
    assert f"cannot bind the publish socket to tcp://127.0.0.1:{port}" in result.stderr
    assert "Address already in use" in result.stderr


def test_unusable_state_dir_is_a_clear_error(make_settings, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state dir should be")
    settings = make_settings(state={"dir": str(blocker / "var")})
    env = {"BUSGATE_CONFIG": settings.loaded_from[0], "PATH": "/usr/bin:/bin"}
    run = subprocess.run([*BUSGATE, "run"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=20)
    assert run.returncode == 2  # refused like check-config refuses it, naming the key
    assert "state.dir" in run.stderr and "is not a directory" in run.stderr
    pub = subprocess.run([*BUSGATE, "publish", "--message", "hi"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=20)
    assert pub.returncode == 75
    assert "not the spool of a busgate daemon" in pub.stderr


def test_full_disk_fails_publish_with_tempfail_and_leaves_no_partial_item(make_settings):
    settings = make_settings()
    adopt(settings)
    spool = runtime.open_spool(settings)
    env = {"BUSGATE_CONFIG": settings.loaded_from[0], "PATH": "/usr/bin:/bin",
           "PYTHONDONTWRITEBYTECODE": "1"}  # no truncated .pyc under the file size limit

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    result = subprocess.run([*BUSGATE, "publish"], input=("x" * 100 + "\n") * 500, env=env,
                            cwd=REPO, capture_output=True, text=True, preexec_fn=small_disk,
                            timeout=20)
    assert result.returncode == 75
    assert "cannot store spool item" in result.stderr and "too large" in result.stderr
    assert spool.pending() == []
    assert list(spool.tmp.iterdir()) == []


def test_status_json_reports_depth_and_counters(daemon):
    proc, settings = daemon()
    assert publish(proc, ["a", "b", "c"]).returncode == 0
    store = runtime.open_store(settings)
    deadline = time.monotonic() + 10
    while store.published_seq_id() < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    out = subprocess.run([*BUSGATE, "status", "--json"], env=proc.env, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    status = json.loads(out)
    assert status["last_seq_id"] == 3 and status["outbox_depth"] == 0
    assert status["counters"]["published.sent"] == 3
    assert status["spool_pending"] == 0


def test_a_killed_spool_worker_is_restarted_and_nothing_is_lost(daemon):
    import os
    import signal

    proc, settings = daemon()
    children = subprocess.run(["pgrep", "-P", str(proc.proc.pid), "-f", "spawn_main"],
                              capture_output=True, text=True).stdout.split()
    assert len(children) == 1, "one spool worker process"
    os.kill(int(children[0]), signal.SIGKILL)
    assert publish(proc, ["after the worker died"]).returncode == 0
    store = runtime.open_store(settings)
    deadline = time.monotonic() + 15
    while store.published_seq_id() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.published_seq_id() == 1
    assert "spool worker exited with status -9; restarting it" in proc.output()
    assert proc.proc.poll() is None


def test_the_spool_worker_dies_with_a_killed_daemon(daemon):
    proc, _settings = daemon()
    children = subprocess.run(["pgrep", "-P", str(proc.proc.pid)], capture_output=True,
                              text=True).stdout.split()
    proc.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            subprocess.run(["kill", "-0", c], capture_output=True).returncode == 0
            for c in children):
        time.sleep(0.05)
    assert all(subprocess.run(["kill", "-0", c], capture_output=True).returncode != 0
               for c in children), "an orphaned spool worker outlived the daemon"


def test_publish_streams_lines_as_they_come(daemon):
    proc, settings = daemon()
    with subscriber(settings) as sub:
        wait_subscribed(proc, settings, sub)
        stream = subprocess.Popen([*BUSGATE, "publish"], stdin=subprocess.PIPE, env=proc.env,
                                  cwd=REPO)
        try:
            for n in range(3):  # stdin stays open: each line must still go out now
                stream.stdin.write(f"tail -f line {n}\n".encode())
                stream.stdin.flush()
                (got,) = list(sub.messages(count=1, timeout=10))
                assert got.body == {"log": f"tail -f line {n}"}
        finally:
            stream.stdin.close()
            assert stream.wait(10) == 0


def test_heartbeats_disabled_the_daemon_keeps_running_and_publishing(daemon):
    """``zmq.heartbeat_interval = 0`` disables heartbeats, not the daemon (its heartbeat
    task used to end at once, and with it ``busgate run``, exit 0)."""
    proc, settings = daemon(zmq={"heartbeat_interval": 0})
    time.sleep(0.5)
    assert proc.proc.poll() is None, proc.output()
    with subscriber(settings) as sub:
        for attempt in range(50):
            assert publish(proc, [f"hb-off {attempt}"]).returncode == 0
            if list(sub.messages(count=1, timeout=0.2)):
                break
        else:
            raise AssertionError("nothing published with heartbeats off")
    assert proc.stop() == 0
