"""Issue 11 item 8: a ``busgate`` command line that behaves (real subprocesses only).

``--config`` before or after the command; no traceback for a bad endpoint or a reader
that goes away; exit codes only from the documented set; ``status`` knows whether the
daemon runs; ``tail`` says when no publisher answers; fedmsg-logger habits get an example.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUSGATE, REPO, free_port, write_config

#: The documented exit codes (README, Commands).
DOCUMENTED = {0, 2, 65, 69, 75}


def busgate(*args: str, env: dict[str, str] | None = None, stdin: bytes = b"",
            timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*BUSGATE, *args], env=env or dict(os.environ), cwd=REPO,
                          input=stdin, capture_output=True, timeout=timeout)


def _conf(tmp: Path, name: str, **sections: dict[str, Any]) -> Path:
    values: dict[str, Any] = {"state": {"dir": str(tmp / "var")},
                              "zmq": {"publish": f"tcp://127.0.0.1:{free_port()}",
                                      "replay": f"tcp://127.0.0.1:{free_port()}"}}
    for key, table in sections.items():
        values.setdefault(key, {}).update(table) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            values[key] = table
    return write_config(tmp / name, values)


def _no_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "BUSGATE_CONFIG"}


# -- --config before or after the command ---------------------------------------------

def test_config_is_accepted_before_the_command_and_the_commands_own_wins(tmp_path) -> None:
    first = _conf(tmp_path, "first.toml", distribution="first")
    second = _conf(tmp_path, "second.toml", distribution="second")
    before = busgate("--config", str(first), "check-config", env=_no_env())
    assert before.returncode == 0, before.stderr
    assert b'distribution = "first"' in before.stdout and str(first).encode() in before.stdout
    both = busgate("--config", str(first), "check-config", "--config", str(second),
                   env=_no_env())
    assert both.returncode == 0 and b'distribution = "second"' in both.stdout
    # and a wrong file given before the command is that file's error, exit 2
    missing = busgate("--config", str(tmp_path / "nope.toml"), "status", env=_no_env())
    assert missing.returncode == 2 and b"nope.toml: file not found" in missing.stderr


# -- no traceback for a bad endpoint ----------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["run"], ["status"], ["check-config"], ["tail", "--timeout", "1"],
    ["replay", "--seq-id", "1", "--timeout", "1"], ["reprocess", "--list"],
    ["publish", "--message", "x"], ["poll", "debbugs", "--once", "--dry-run"],
])
def test_a_bad_endpoint_in_the_configuration_is_exit_2_in_every_command(tmp_path, argv) -> None:
    path = _conf(tmp_path, "busgate.toml", zmq={"publish": "127.0.0.1:9940"})
    result = busgate("--config", str(path), *argv, env=_no_env())
    assert result.returncode == 2, result.stderr
    assert b"zmq.publish" in result.stderr and b"e.g. tcp://127.0.0.1:9940" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [
    ["tail", "--endpoint", "127.0.0.1:9940", "--timeout", "1"],
    ["tail", "--endpoint", "tcp://127.0.0.1:9940,127.0.0.1:9941", "--timeout", "1"],
    ["tail", "--endpoint", "tcp://127.0.0.1:0", "--timeout", "1"],
    ["replay", "--endpoint", "127.0.0.1:9941", "--seq-id", "1"],
    ["replay", "--endpoint", "udp://127.0.0.1:9941", "--seq-id", "1"],
])
def test_a_bad_endpoint_option_is_exit_2_without_traceback(argv) -> None:
    result = busgate(*argv, env=_no_env())
    assert result.returncode == 2, result.stderr
    assert b"--endpoint: " in result.stderr and b"Traceback" not in result.stderr


# -- a reader that goes away --------------------------------------------------------------

def _into_closed_pipe(argv: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run ``busgate ARGV`` writing into a pipe whose reader, a real ``head -n 0``, has
    already exited: every write fails with EPIPE, as for ``busgate status | head -1``
    once head has its line."""
    read_end, write_end = os.pipe()
    head = subprocess.run(["head", "-n", "0"], stdin=read_end, timeout=10)
    assert head.returncode == 0
    os.close(read_end)
    try:
        proc = subprocess.Popen([*BUSGATE, *argv], env=env, cwd=REPO, stdout=write_end,
                                stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def test_closed_pipe_is_a_quiet_exit_0_for_status_tail_and_replay(daemon) -> None:
    proc, _ = daemon()
    published = busgate("publish", "--message", "one", env=proc.env)
    assert published.returncode == 0, published.stderr
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        replayed = busgate("replay", "--seq-id", "1", env=proc.env)
        if replayed.stdout:
            break
        time.sleep(0.1)
    assert b'"seq_id": 1' in replayed.stdout
    for argv in (["status"], ["status", "--json"], ["replay", "--seq-id-range", "1", "1"],
                 ["tail", "--heartbeats", "--timeout", "20", "--count", "50"]):
        code, err = _into_closed_pipe(argv, proc.env)
        assert code == 0, (argv, err)
        assert err == b"", (argv, err)  # no traceback, no "Exception ignored" either


def test_status_piped_into_a_real_head_prints_one_line_and_exits_0(daemon) -> None:
    proc, _ = daemon()
    piped = subprocess.run(["bash", "-c", f"{' '.join(BUSGATE)} status | head -n 1; "
                                          "exit ${PIPESTATUS[0]}"],
                           env=proc.env, cwd=REPO, capture_output=True, timeout=30)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines() == [f"daemon          running (pid {proc.proc.pid})"
                                         .encode()]
    assert b"Traceback" not in piped.stderr and b"BrokenPipe" not in piped.stderr


# -- status says whether the daemon runs ----------------------------------------------------

def test_status_says_whether_the_daemon_runs_and_a_second_run_is_refused(daemon) -> None:
    proc, settings = daemon()
    shown = busgate("status", env=proc.env)
    assert shown.returncode == 0
    assert f"daemon          running (pid {proc.proc.pid})".encode() in shown.stdout
    as_json = json.loads(busgate("status", "--json", env=proc.env).stdout)
    assert as_json["daemon"] == {"running": True, "pid": proc.proc.pid}
    second = busgate("run", env=proc.env)
    assert second.returncode == 69 and b"already running" in second.stderr
    assert str(proc.proc.pid).encode() in second.stderr
    proc.kill()  # kill -9: the pid stays in the lock file, the lock does not
    assert (settings.state_dir / "busgate.lock").read_text().strip() == str(proc.proc.pid)
    after = busgate("status", env=proc.env)
    assert after.returncode == 0 and b"daemon          not running" in after.stdout
    assert json.loads(busgate("status", "--json", env=proc.env).stdout)["daemon"] == {
        "running": False, "pid": None}


# -- tail says when nobody answers ------------------------------------------------------

def test_tail_warns_once_when_no_publisher_answers(tmp_path) -> None:
    path = _conf(tmp_path, "busgate.toml", discovery={"include_self": False})
    port = free_port()
    started = time.monotonic()
    result = busgate("--config", str(path), "tail", "--endpoint", f"tcp://127.0.0.1:{port}",
                     "--silence", "0.5", "--timeout", "3", env=_no_env())
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(b"no publisher has answered") == 1, result.stderr
    assert f"tcp://127.0.0.1:{port}".encode() in result.stderr
    assert time.monotonic() - started < 20


def test_tail_does_not_warn_while_heartbeats_arrive(daemon) -> None:
    proc, _ = daemon()  # heartbeat every 0.5 s
    result = busgate("tail", "--silence", "1.5", "--timeout", "3", env=proc.env)
    assert result.returncode == 0, result.stderr
    assert b"no publisher has answered" not in result.stderr


def test_tail_says_once_when_the_publisher_answers_again(daemon) -> None:
    proc, _ = daemon()
    assert proc.stop() == 0
    tail = subprocess.Popen([*BUSGATE, "tail", "--silence", "1", "--timeout", "40"],
                            env=proc.env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(tail.stderr.readline, b"")),
                              daemon=True)
    reader.start()
    try:
        _wait_for(lines, b"no publisher has answered", tail)
        proc.start()  # heartbeats every 0.5 s from now on
        _wait_for(lines, b"answering again", tail)
    finally:
        tail.send_signal(signal.SIGINT)
        tail.wait(20)
        reader.join(10)
    assert sum(b"no publisher has answered" in line for line in lines) == 1, lines
    assert sum(b"answering again" in line for line in lines) == 1, lines
    assert not any(b"Traceback" in line for line in lines)


def _wait_for(lines: list[bytes], text: bytes, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 25
    while not any(text in line for line in lines):
        assert proc.poll() is None and time.monotonic() < deadline, (text, lines)
        time.sleep(0.05)


# -- fedmsg-logger habits ---------------------------------------------------------------

@pytest.mark.parametrize(("topic", "example"), [("log", b"--topic message.log"),
                                                ("build", b"--topic build.log"),
                                                ("a.b.c.d", b"--topic message.log")])
def test_publish_topic_errors_show_an_example(topic, example) -> None:
    result = busgate("publish", "--topic", topic, "--message", "x", env=_no_env())
    assert result.returncode == 65
    assert b"<object>[.<subobject>].<event>, e.g. " + example in result.stderr


def test_publish_message_stores_without_importing_the_state_database(tmp_path) -> None:
    """Start-up time (issue 16): ``busgate publish --message`` writes a spool item; the
    store's modules (sqlite3, envelopes, signing) are for the daemon, not for it, and a
    single message needs no content key."""
    from tests.conftest import mark_spool

    cfg = _conf(tmp_path, "c.toml")
    mark_spool(tmp_path / "var" / "spool")
    result = subprocess.run([*BUSGATE, "publish", "--topic", "x.y", "--message", "h\u00e9"],
                            env={**_no_env(), "BUSGATE_CONFIG": str(cfg),
                                 "PYTHONPROFILEIMPORTTIME": "1"},
                            cwd=REPO, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert "gateway.publishing" in imported  # the probe sees the command's imports
    # ``hashlib`` (OpenSSL) keys a stream's lines; one --message is never a stream.
    # ``argparse``: the usual command line is read by ``publish.parse_fast``.
    # ``uuid`` (and ``platform``): a run's keys take their random part from os.urandom;
    # ``orjson`` (which imports uuid) and ``msgspec``: one body is json's to write.
    heavy = {"sqlite3", "gateway.store", "gateway.envelope", "gateway.signing", "hashlib",
             "argparse", "uuid", "platform", "orjson", "msgspec"}
    assert not imported & heavy
    (item,) = (tmp_path / "var" / "spool" / "new").iterdir()
    assert b'"body":{"log":"h\\u00e9"}' in item.read_bytes()


@pytest.mark.parametrize("argv", [
    [], ["--message", "hi"], ["--message=a=b", "--topic", "x.y", "--json-input"],
    ["--modname", "m", "--topic", "a.b.c", "--config", "/c.toml", "--message", "\u00e9 x"],
    ["--message", "a", "--message", "b"], ["--topic=t.u", "--config=c.toml"],
])
def test_publish_reads_its_usual_command_line_as_argparse_does(argv) -> None:
    from gateway.cli import build_parser, publish

    fast = publish.parse_fast(argv)
    parsed = build_parser("publish").parse_args(["publish", *argv])
    assert fast is not None
    assert vars(fast) == {name: getattr(parsed, name) for name in vars(fast)}


@pytest.mark.parametrize("argv", [
    ["-h"], ["--help"], ["--mess", "x"], ["--message"], ["--message", ""], ["--message=-x"],
    ["--message", "-1"], ["--json-input=1"], ["stray"], ["--", "x"], ["--topic", "--json-input"],
])
def test_publish_leaves_help_errors_and_odd_values_to_argparse(argv) -> None:
    from gateway.cli import publish

    assert publish.parse_fast(argv) is None


def test_publish_help_and_misuse_still_come_from_argparse() -> None:
    assert b"--json-input" in busgate("publish", "--help", env=_no_env()).stdout
    misuse = busgate("publish", "--message", env=_no_env())
    assert misuse.returncode == 2 and b"expected one argument" in misuse.stderr


# -- exit codes stay in the documented set --------------------------------------------

def test_failure_modes_of_every_command_exit_within_the_documented_set(tmp_path) -> None:
    path = _conf(tmp_path, "busgate.toml")
    env = {**_no_env(), "BUSGATE_CONFIG": str(path)}
    samples: list[tuple[list[str], bytes, int]] = [
        (["run", "--no-such-option"], b"", 2),
        (["publish", "--message", "x"], b"", 75),            # no daemon's spool
        (["publish", "--topic", "log"], b"", 65),
        (["tail", "--count", "x"], b"", 2),
        (["mail"], b"", 65),                                  # empty mail
        (["mail", "--spool", str(tmp_path / "nospool")], b"Subject: x\n\nx\n", 75),
        (["git-hook", "--install", str(tmp_path)], b"", 75),  # no daemon's spool
        (["poll", "debbugs", "--once"], b"", 2),              # no url
        (["poll", "wanna-build", "--once"], b"", 2),          # no dsn
        (["replay"], b"", 2),                                 # no query
        (["replay", "--seq-id", "1", "--timeout", "0.3"], b"", 69),  # nobody answers
        (["reprocess", "--all"], b"", 69),                    # no daemon's state
        (["status"], b"", 69),
        (["check-config", "--config", str(tmp_path / "missing.toml")], b"", 2),
        (["no-such-command"], b"", 2),
    ]
    for argv, stdin, expected in samples:
        result = busgate(*argv, env=env, stdin=stdin)
        assert result.returncode in DOCUMENTED, (argv, result.returncode, result.stderr)
        assert result.returncode == expected, (argv, result.returncode, result.stderr)
        assert b"Traceback" not in result.stderr, (argv, result.stderr)
    assert not (tmp_path / "var").exists(), "a failing command created state"
