"""Issue 9, findings 10-12: commands that would write where no daemon reads, a state
database that cannot grow, turns read-only, is corrupted or deleted, and a wall clock
that steps back. Real ``busgate`` processes, real SQLite files, real faults."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway import config, mark, runtime
from gateway.event import Event
from tests.conftest import BUSGATE, REPO, Daemon, adopt, write_config

EX_UNAVAILABLE, EX_TEMPFAIL = 69, 75
#: A process under a small RLIMIT_FSIZE must not write (truncated) bytecode caches.
NO_PYC = {"PYTHONDONTWRITEBYTECODE": "1"}


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def busgate(*args: str, env: dict[str, str], cwd: Path = REPO, data: bytes = b"",
            timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*BUSGATE, *args], input=data, env=env, cwd=cwd,
                          capture_output=True, timeout=timeout, check=False)


def status(env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    result = busgate("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def worker_pid(proc: Daemon, timeout: float = 20.0) -> int:
    """The daemon's one spool worker; waits for it (under load it may be spawned only
    after the daemon said it is publishing, or be between a death and its restart)."""
    out: list[str] = []

    def one() -> bool:
        out[:] = subprocess.run(["pgrep", "-P", str(proc.proc.pid), "-f", "spawn_main"],
                                capture_output=True, text=True).stdout.split()
        return len(out) == 1

    wait_for(one, timeout, what=f"one spool worker process (found {out})")
    return int(out[0])


def kill_worker(proc: Daemon) -> None:
    os.kill(worker_pid(proc), signal.SIGKILL)


def make_read_only(path: Path) -> None:
    """Read-only for anyone, root included (chattr +i on ext4; chmod for other users)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o444)


def make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o644)


@pytest.fixture
def read_only_guard():  # type: ignore[no-untyped-def]
    """Never leave an immutable file behind (pytest could not delete tmp_path)."""
    touched: list[Path] = []
    yield touched
    for path in touched:
        if path.exists():
            make_writable(path)


# -- finding 10: short-lived commands never write where no daemon reads -----------------

def test_commands_run_elsewhere_refuse_instead_of_creating_state(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "BUSGATE_CONFIG"}
    env["PYTHONPATH"] = str(REPO)
    pub = busgate("publish", "--message", "hello", env=env, cwd=elsewhere)
    assert pub.returncode == EX_TEMPFAIL
    assert b"is not the spool of a busgate daemon" in pub.stderr
    assert str(elsewhere / "var" / "spool").encode() in pub.stderr
    mail = busgate("mail", env=env, cwd=elsewhere, data=b"Subject: x\n\nhi\n")
    assert mail.returncode == EX_TEMPFAIL and b"mail left with the MTA" in mail.stderr
    stat = busgate("status", env=env, cwd=elsewhere)
    assert stat.returncode == EX_UNAVAILABLE
    assert b"holds no busgate state" in stat.stderr and b"--config" in stat.stderr
    assert list(elsewhere.iterdir()) == [], "no command may create state where no daemon runs"


def test_publish_waits_for_the_daemon_mark_then_is_published(daemon, tmp_path: Path) -> None:
    proc, settings = daemon()
    info = mark.read_state(settings.state_dir)
    assert info is not None and info["database"] == str(settings.db_path.absolute())
    assert runtime.open_spool(settings).is_marked()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ok = busgate("publish", "--message", "hello", env=proc.env, cwd=elsewhere)
    assert ok.returncode == 0, ok.stderr
    wait_for(lambda: status(proc.env)["published_seq_id"] == 1, what="the message published")
    assert list(elsewhere.iterdir()) == []


def test_git_hook_install_refuses_and_a_push_warns_loudly_when_no_daemon_reads(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "busgate.toml", {"state": {"dir": str(state)}})
    env = {**os.environ, "BUSGATE_CONFIG": str(cfg), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull}
    bare = tmp_path / "pkg.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    refused = busgate("git-hook", "--install", str(bare), env=env)
    assert refused.returncode == EX_TEMPFAIL
    assert str(state / "spool").encode() in refused.stderr
    assert b"start `busgate run` once" in refused.stderr
    assert not (bare / "hooks" / "post-receive").exists()

    settings = config.load(cfg)
    adopt(settings)  # `busgate run` started once: now the hook goes in
    installed = busgate("git-hook", "--install", str(bare), env=env)
    assert installed.returncode == 0, installed.stderr

    (settings.spool_dir / mark.SPOOL_MARK).unlink()  # e.g. the spool moved away later
    work = tmp_path / "work"
    git = ["git", "-c", "user.name=A", "-c", "user.email=a@example.org"]
    subprocess.run([*git, "init", "-q", str(work)], check=True, env=env)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=work, check=True,
                   env=env)
    push = subprocess.run([*git, "push", "-q", str(bare), "HEAD:refs/heads/main"], cwd=work,
                          env=env, capture_output=True, text=True, timeout=60)
    assert push.returncode == 0, "a hook never fails a push"
    assert push.stderr.count("busgate: warning:") == 1, push.stderr
    assert "push notice not sent" in push.stderr
    assert "is not the spool of a busgate daemon" in push.stderr
    assert runtime.open_spool(settings).pending() == []


# -- finding 11: state faults ----------------------------------------------------------

def test_read_only_database_at_start_is_exit_69_with_a_clear_message(
        daemon, read_only_guard) -> None:
    proc, settings = daemon()
    assert proc.stop() == 0
    make_read_only(settings.db_path)
    read_only_guard.append(settings.db_path)
    run = busgate("run", env=proc.env)
    assert run.returncode == EX_UNAVAILABLE, run.stderr
    assert b"readonly database" in run.stderr and b"Traceback" not in run.stderr


def test_read_only_database_while_running_backs_off_flags_status_and_recovers(
        daemon, read_only_guard) -> None:
    proc, settings = daemon()
    make_read_only(settings.db_path)
    read_only_guard.append(settings.db_path)
    kill_worker(proc)  # the restarted worker opens the file afresh: read-only
    assert busgate("publish", "--message", "kept", env=proc.env).returncode == 0
    wait_for(lambda: status(proc.env)["health"] == "degraded", what="the health flag")
    now = status(proc.env)
    assert "readonly database" in now["faults"]["spool-worker"]["problem"]
    assert now["spool_pending"] == 1 and now["last_seq_id"] == 0
    time.sleep(2.0)  # several retries
    assert proc.output().count("attempt to write a readonly database") == 1, "logged once"
    assert proc.proc.poll() is None, "the daemon stays up"
    text = busgate("status", env=proc.env).stdout.decode()
    assert "health          degraded" in text and "spool-worker" in text

    make_writable(settings.db_path)
    wait_for(lambda: status(proc.env)["published_seq_id"] == 1, timeout=45,
             what="the kept message published after recovery")
    assert status(proc.env)["health"] == "ok"
    assert "spool-worker recovered" in proc.output()


@pytest.mark.slow
def test_database_that_cannot_grow_backs_off_logs_once_and_recovers(daemon) -> None:
    proc, settings = daemon()
    pid = worker_pid(proc)
    files = [settings.db_path, settings.db_path.with_name("busgate.sqlite-wal"),
             proc.log_path]
    limit = max(p.stat().st_size for p in files if p.exists()) + 32 * 1024
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))  # "disk full" for the worker
    lines = b"".join(b"%d %s\n" % (n, b"x" * 400) for n in range(2000))
    assert busgate("publish", env=proc.env, data=lines).returncode == 0
    wait_for(lambda: status(proc.env)["health"] == "degraded", what="the health flag")
    assert status(proc.env)["last_seq_id"] == 0, "nothing half-stored"
    time.sleep(2.0)
    assert proc.output().count("cannot store spool items") == 1, "logged once"
    assert proc.proc.poll() is None and worker_pid(proc) == pid, "no crash loop"

    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
    wait_for(lambda: status(proc.env)["published_seq_id"] == 2000, timeout=45,
             what="all 2000 messages after the disk had room again")
    assert status(proc.env)["health"] == "ok"


def test_corrupted_database_stops_the_daemon_with_69_not_a_crash_loop(daemon) -> None:
    proc, settings = daemon()
    assert busgate("publish", "--message", "one", env=proc.env).returncode == 0
    wait_for(lambda: status(proc.env)["published_seq_id"] == 1, what="one message")
    conn = sqlite3.connect(settings.db_path)
    # else SQLite reads page 1 from the WAL (and the next checkpoint repairs the header)
    wait_for(lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone() == (0, 0, 0),
             what="an empty WAL")
    conn.close()
    with settings.db_path.open("r+b") as db:
        db.write(b"this is not SQLite at all")  # the header and more
    kill_worker(proc)  # the restarted worker opens the damaged file
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.proc.wait(20)
    code = proc.proc.poll()
    assert code == EX_UNAVAILABLE, proc.output()
    out = proc.output()
    assert "file is not a database" in out and "Traceback" not in out
    assert out.count("spool worker exited") == 0, "no restart loop"


def test_corrupted_database_at_start_is_exit_69_and_status_says_why(daemon) -> None:
    proc, settings = daemon()
    assert busgate("publish", "--message", "one", env=proc.env).returncode == 0
    wait_for(lambda: status(proc.env)["published_seq_id"] == 1, what="one message")
    assert proc.stop() == 0  # a clean stop checkpoints: the file alone holds the data
    with settings.db_path.open("r+b") as db:
        db.write(b"this is not SQLite at all")
    run = busgate("run", env=proc.env)
    assert run.returncode == EX_UNAVAILABLE
    assert b"file is not a database" in run.stderr and b"Traceback" not in run.stderr
    stat = busgate("status", env=proc.env)
    assert stat.returncode == EX_UNAVAILABLE and b"file is not a database" in stat.stderr


def test_deleted_database_stops_the_daemon_and_no_new_file_is_written(daemon) -> None:
    proc, settings = daemon()
    # The worker has the database open (one message went through it)...
    assert busgate("publish", "--message", "before", env=proc.env).returncode == 0
    wait_for(lambda: status(proc.env)["published_seq_id"] == 1, what="one message")
    # ...and is stopped while the files go: it cannot notice the deletion and exit on its
    # own before the kill (the test then found no worker). Whether the daemon notices
    # first or restarts the killed worker (which must not create a new, unread
    # database), it must stop with 69; it once spun instead (tests/test_daemon_stop.py).
    pid = worker_pid(proc)
    os.kill(pid, signal.SIGSTOP)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.db_path}{suffix}").unlink(missing_ok=True)
    os.kill(pid, signal.SIGKILL)
    assert busgate("publish", "--message", "after", env=proc.env).returncode == 0
    code = proc.proc.wait(20)
    assert code == EX_UNAVAILABLE, proc.output()
    assert "was deleted" in proc.output() and "Traceback" not in proc.output()
    assert not settings.db_path.exists()
    assert len(runtime.open_spool(settings).pending()) == 1, "the message waits in the spool"


def test_a_worker_started_after_the_deletion_exits_69_and_creates_no_file(make_settings) -> None:
    """The restart path of the test above, without the race with the daemon's own check."""
    import logging

    from gateway import health, spoolworker

    settings = make_settings()
    adopt(settings)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.db_path}{suffix}").unlink(missing_ok=True)
    faults = health.Reporter(settings.state_dir, "spool-worker", logging.getLogger("test"))
    with pytest.raises(SystemExit) as stopped:
        spoolworker._open_state(settings, faults, os.getppid())
    assert stopped.value.code == EX_UNAVAILABLE == spoolworker.EXIT_STATE_LOST
    assert not settings.db_path.exists()
    assert "was deleted" in health.read(settings.state_dir)["spool-worker"]["problem"]


def test_a_thread_connecting_after_the_deletion_creates_no_new_file(make_settings) -> None:
    """Connections are per thread: the daemon's cursor writes run in executor threads
    that may connect for the first time after the file went."""
    import threading

    from gateway.errors import StoreError

    settings = make_settings()
    store = runtime.open_store(settings)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.db_path}{suffix}").unlink(missing_ok=True)
    failed: list[BaseException] = []

    def connect() -> None:
        try:
            store.connect()
        except StoreError as exc:
            failed.append(exc)

    thread = threading.Thread(target=connect)
    thread.start()
    thread.join(30)
    assert failed and "cannot open state database" in str(failed[0])
    assert not settings.db_path.exists()
    store.close()


# -- finding 12: clocks ------------------------------------------------------------------

def test_outbox_timestamps_never_go_backwards(make_settings) -> None:
    store = runtime.open_store(make_settings())
    with store.transaction() as tx:
        tx.add_events([Event("logger", "message", "log", key="t:1", body={})], now=2_000_000)
    with store.transaction() as tx:  # the wall clock stepped back an hour
        tx.add_events([Event("logger", "message", "log", key="t:2", body={})],
                      now=2_000_000 - 3600)
    stamps = [json.loads(r.envelope)["timestamp"] for r in store.rows_after(0)]
    assert stamps == [2_000_000, 2_000_000]


FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


class FakedClockDaemon(Daemon):
    """``busgate run`` (and its spool worker) with libfaketime preloaded."""

    def __init__(self, config_path: Path, log_path: Path, faketime: dict[str, str]):
        super().__init__(config_path, log_path)
        self.faketime = faketime

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.faketime}


@pytest.mark.slow
def test_pollers_and_outbox_survive_a_wall_clock_step_back(tmp_path: Path,
                                                           make_settings) -> None:
    """The daemon runs under libfaketime (Debian's ``faketime``) whose offset file is
    rewritten while it runs: the wall clock steps back one hour, monotonic time does not."""
    if not FAKETIME_LIB.exists():
        from tests.conftest import IN_CI

        if IN_CI:
            pytest.fail("libfaketime missing: apt-get install faketime (.ci/run does)")
        pytest.skip("libfaketime missing: apt-get install faketime")
    from fixtures.debbugs.soapserver import FakeDebbugs

    fake = FakeDebbugs().start()
    try:
        fake.put(10, package="udisks2", source="udisks2", subject="panic")
        settings = make_settings(debbugs={
            "enabled": True, "url": fake.url, "packages": ["udisks2"], "watch_new": False,
            "interval": 0.3, "mail_grace": 0.0, "retries": 0, "timeout": 3.0})
        offset = tmp_path / "faketime.rc"
        offset.write_text("+0\n")
        proc = FakedClockDaemon(Path(settings.loaded_from[0]), tmp_path / "daemon.log", {
            "LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME_TIMESTAMP_FILE": str(offset),
            "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
        base_env = {**os.environ, "BUSGATE_CONFIG": settings.loaded_from[0]}
        try:
            proc.start()
            assert busgate("publish", "--message", "before", env=base_env).returncode == 0
            wait_for(lambda: status(base_env)["published_seq_id"] == 1, what="'before'")
            wait_for(lambda: "get_bugs" in fake.methods(), timeout=10,
                     what="a poll before the step")  # the first poll loads the WSDL first
            offset.write_text("-3600\n")  # the wall clock steps back an hour
            time.sleep(0.5)
            stepped = len([m for m in fake.methods() if m == "get_bugs"])
            wait_for(lambda: len([m for m in fake.methods() if m == "get_bugs"]) >= stepped + 3,
                     timeout=10, what="polls after the step back")
            assert busgate("publish", "--message", "after", env=base_env).returncode == 0
            wait_for(lambda: status(base_env)["published_seq_id"] == 2, what="'after'")
            store = runtime.open_store(settings)
            stamps = [json.loads(r.envelope)["timestamp"] for r in store.rows_after(0)]
            assert stamps == sorted(stamps), stamps
            assert proc.proc.poll() is None
        finally:
            proc.kill()
    finally:
        fake.stop()


def test_faketime_test_really_steps_the_wall_clock(tmp_path: Path) -> None:
    """Guards the test above: under the same settings a child's wall clock does step back
    while its monotonic clock goes on (else that test would prove nothing)."""
    if not FAKETIME_LIB.exists():
        pytest.skip("libfaketime missing: apt-get install faketime")
    offset = tmp_path / "faketime.rc"
    offset.write_text("+0\n")
    env = {**os.environ, "LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    probe = ("import asyncio, sys, time\n"
             "async def main():\n"
             "    w, m = time.time(), time.monotonic()\n"
             "    print('ready', flush=True); sys.stdin.readline()\n"
             "    await asyncio.sleep(0.2)\n"
             "    print(round(time.time() - w), round(time.monotonic() - m, 1))\n"
             "asyncio.run(main())\n")
    child = subprocess.Popen([sys.executable, "-c", probe], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "ready"
    offset.write_text("-3600\n")
    child.stdin.write("\n")
    child.stdin.flush()
    wall, mono = child.stdout.readline().split()
    child.wait(10)
    assert int(wall) <= -3590 and 0.1 <= float(mono) < 5


# -- finding 11: a failing publish stores all of its input or none of it ---------------

def test_a_failing_publish_then_the_same_input_again_stores_every_message_once(daemon) -> None:
    """More than CHUNK lines go out in pieces; the last piece cannot be stored (exit 75).
    Running the same input again, as an MTA does, adds only what is missing."""
    proc, _settings = daemon()
    data = b"".join(b"short %d\n" % n for n in range(20_000))
    data += b"".join(b"long %d %s\n" % (n, b"y" * 1000) for n in range(5_000))
    limit = 3 * 1024 * 1024  # a 10,000-short-line item fits, the 5,000 long lines do not

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    failed = subprocess.run([*BUSGATE, "publish"], input=data, env=NO_PYC | proc.env, cwd=REPO,
                            capture_output=True, preexec_fn=small_files, timeout=60)
    assert failed.returncode == EX_TEMPFAIL, failed.stderr
    assert b"20000 message(s) stored before" in failed.stderr
    wait_for(lambda: status(proc.env)["published_seq_id"] == 20_000, what="the stored part")
    retry = busgate("publish", env=proc.env, data=data, timeout=60)
    assert retry.returncode == 0, retry.stderr
    wait_for(lambda: status(proc.env)["published_seq_id"] == 25_000, timeout=60,
             what="the rest")
    time.sleep(0.5)
    assert status(proc.env)["last_seq_id"] == 25_000, "nothing doubled"


def test_a_failing_small_publish_stores_nothing_and_a_repeat_is_published_again(
        daemon) -> None:
    proc, settings = daemon()
    data = b"".join(b"line %d %s\n" % (n, b"z" * 100) for n in range(500))

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    failed = subprocess.run([*BUSGATE, "publish"], input=data, env=NO_PYC | proc.env, cwd=REPO,
                            capture_output=True, preexec_fn=small_files, timeout=30)
    assert failed.returncode == EX_TEMPFAIL and b"nothing stored" in failed.stderr
    spool = runtime.open_spool(settings)
    assert spool.pending() == [] and list(spool.tmp.iterdir()) == []
    for _ in range(2):  # the same text published twice on purpose is two sets of messages
        assert busgate("publish", env=proc.env, data=data).returncode == 0
    wait_for(lambda: status(proc.env)["published_seq_id"] == 1000, what="both runs")


def test_poll_and_reprocess_refuse_state_no_daemon_marked(tmp_path: Path) -> None:
    """Finding 10, the remaining writers: `poll --once` and `reprocess` on a state dir
    that no `busgate run` marked refuse (75 / 69) and create nothing there."""
    config = write_config(tmp_path / "busgate.toml", {
        "state": {"dir": str(tmp_path / "elsewhere")},
        "debbugs": {"url": "http://127.0.0.1:9/soap.cgi", "timeout": 1.0}})
    env = {**os.environ, "BUSGATE_CONFIG": str(config)}
    poll = subprocess.run([*BUSGATE, "poll", "debbugs", "--once"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert poll.returncode == 75, poll.stderr
    assert "holds no busgate state" in poll.stderr and "nothing stored" in poll.stderr
    reprocess = subprocess.run([*BUSGATE, "reprocess", "--all"], env=env,
                               capture_output=True, text=True, timeout=60)
    assert reprocess.returncode == 69, reprocess.stderr
    assert "holds no busgate state" in reprocess.stderr
    assert not (tmp_path / "elsewhere").exists() or \
        not any((tmp_path / "elsewhere").rglob("*.db")), "state was created"
