"""``busgate tail`` as a user runs it: a real subscriber process against a real daemon."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time

from gateway import runtime
from tests import tail_types
from tests.conftest import BUSGATE, REPO


def start_tail(proc, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*BUSGATE, "tail", *args], env=proc.env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def publish(proc, *args: str, text: str = "") -> None:
    subprocess.run([*BUSGATE, "publish", *args], input=text, text=True, env=proc.env, cwd=REPO,
                   check=True)


def wait_for_outbox(settings, seq: int) -> None:
    store = runtime.open_store(settings)
    deadline = time.monotonic() + 10
    while store.published_seq_id() < seq and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.published_seq_id() >= seq


def test_json_output_with_topic_and_exclude_filters(daemon):
    proc, _settings = daemon()
    # The tail starts live: keep publishing until it has printed what we expect.
    tail = start_tail(proc, "--json", "--topic", "org.debian.dev.myapp.", "--exclude",
                      "org.debian.dev.myapp.package.reject", "--count", "2", "--timeout", "20")
    try:
        for _ in range(100):
            publish(proc, "--modname", "myapp", "--topic", "package.reject", "--message", "no")
            publish(proc, "--modname", "logger", "--topic", "message.log", "--message", "noise")
            publish(proc, "--modname", "myapp", "--topic", "package.accept", "--message", "yes")
            if tail.poll() is not None:
                break
            time.sleep(0.05)
        out, err = tail.communicate(timeout=20)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2
    assert {line["topic"] for line in lines} == {"org.debian.dev.myapp.package.accept"}
    assert all(line["msg"] == {"log": "yes"} for line in lines)
    assert lines[1]["seq_id"] > lines[0]["seq_id"]


def test_pretty_output_marks_replayed_messages_and_timeout_stops(daemon):
    proc, settings = daemon(zmq={"sndhwm": 50, "hwm_wait_ms": 5})
    tail = start_tail(proc, "--pretty", "--color", "never", "--count", "2001",
                      "--timeout", "60")
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in tail.stdout], daemon=True)
    reader.start()
    try:
        seq = 0
        while lines.empty():  # the tail has joined once it prints something
            publish(proc, "--message", "probe")
            seq += 1
            time.sleep(0.05)
            assert seq < 200, "tail never printed anything"
        wait_for_outbox(settings, seq)
        tail.send_signal(signal.SIGSTOP)  # frozen while these are published
        try:
            publish(proc, text="".join(f"late {i} {'x' * 10000}\n" for i in range(2000)))
            wait_for_outbox(settings, seq + 2000)
        finally:
            tail.send_signal(signal.SIGCONT)
        assert tail.wait(60) == 0, tail.stderr.read()
    finally:
        tail.kill()
    reader.join(5)
    out = "".join(iter_queue(lines))
    heads = [line for line in out.splitlines() if "org.debian.dev.logger.message.log" in line]
    late = [line for line in heads if "[replayed]" in line]
    assert len(heads) >= 2001
    assert late, "a frozen tail must have needed replay"
    idle = subprocess.run([*BUSGATE, "tail", "--timeout", "0.5"], env=proc.env, cwd=REPO,
                          capture_output=True, text=True, timeout=10)
    assert idle.returncode == 0 and idle.stdout == ""


def iter_queue(q: queue.Queue[str]):
    while not q.empty():
        yield q.get()


def test_terse_output_is_one_line_per_message(daemon):
    proc, _settings = daemon()
    tail = start_tail(proc, "--terse", "--count", "1", "--timeout", "20")
    try:
        for _ in range(200):
            publish(proc, "--json-input", "--modname", "myapp", "--topic", "package.accept",
                    text='{"source": "hebcal", "version": "4.31-1"}\n')
            if tail.poll() is not None:
                break
        out, _ = tail.communicate(timeout=20)
    finally:
        tail.kill()
    (line,) = out.splitlines()
    # No type claims myapp.package.accept in this test: the base summary, no link.
    assert re.fullmatch(r"\d\d:\d\d:\d\d myapp\.package\.accept source=hebcal version=4\.31-1",
                        line), line


def test_terse_through_a_registered_type_with_user_package_and_topic_filters(
        daemon, tmp_path, monkeypatch):
    """A source registered through the real registry (a dist-info on PYTHONPATH of the
    daemon, publish and tail) gives the summary and link; --users/--packages (repeated)
    and unprefixed --topic/--exclude choose the messages; the time is local (the tail's
    TZ)."""
    site = tail_types.register(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(REPO)]))
    proc, _settings = daemon()
    env = {**proc.env, "TZ": "XYZ-05:30"}
    tail = subprocess.Popen(
        [*BUSGATE, "tail", "--terse", "--topic", "tailtest", "--exclude", "tailtest.upload.noisy",
         "--users", "alice", "--users", "carol", "--packages", "hebcal", "--count", "4",
         "--timeout", "30"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.time()
    try:
        for n in range(100):
            uploads = [{"user": user, "package": package, "version": f"{n}.0-1"}
                       for user, package in (("alice", "hebcal"), ("bob", "hebcal"),
                                             ("carol", "dpkg"), ("carol", "hebcal"))]
            publish_as(env, "--json-input", "--modname", "tailtest", "--topic", "upload.done",
                       text="".join(json.dumps(u) + "\n" for u in uploads))
            publish_as(env, "--json-input", "--modname", "tailtest", "--topic", "upload.noisy",
                       text=json.dumps(uploads[0]) + "\n")
            publish_as(env, "--message", "alice hebcal")
            if tail.poll() is not None:
                break
        out, err = tail.communicate(timeout=30)
    finally:
        tail.kill()
    ended = time.time()
    assert tail.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4, out
    local = {time.strftime("%H:%M:%S", time.gmtime(t + 5 * 3600 + 1800))
             for t in range(int(started) - 1, int(ended) + 2)}
    seen = []
    for line in lines:
        clock, rest = line.split(" ", 1)
        assert clock in local, (clock, sorted(local))
        match = re.fullmatch(r"tailtest\.upload\.done (alice|carol) uploaded hebcal "
                             r"(\d+)\.0-1 https://tracker\.example\.org/pkg/hebcal", rest)
        assert match, line
        seen.append(match.group(1))
    assert set(seen) == {"alice", "carol"}


def publish_as(env: dict[str, str], *args: str, text: str = "") -> None:
    subprocess.run([*BUSGATE, "publish", *args], input=text, text=True, env=env, cwd=REPO,
                   check=True)
