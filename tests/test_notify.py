"""``busgate notify`` on a private session bus (dbus-run-session) with a notification
server the test owns: messages published through a real daemon arrive as Notify calls
(summary, link, urgency from severity), unfollowed ones do not, a burst of 1,000 is
rate-limited into one summary, and a missing server is an error retried, not a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gateway import desktop, notify_rules
from gateway.desktop import DesktopError, Notification, Notifier
from gateway.errors import ConfigError
from gateway.notifying import Desk
from tests import notify_types
from tests.conftest import BUSGATE, REPO
from tests.notify_server import NotificationServer, SessionBus


@pytest.fixture
def bus():
    session = SessionBus()
    yield session
    session.close()


@pytest.fixture
def typed_daemon(daemon, tmp_path, monkeypatch):
    site = notify_types.register(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(REPO)]))
    return daemon


def publish(env: dict[str, str], topic: str, bodies: list[dict[str, str]]) -> None:
    subprocess.run([*BUSGATE, "publish", "--json-input", "--modname", "notifytest", "--topic",
                    topic], input="".join(json.dumps(b) + "\n" for b in bodies), text=True,
                   env=env, cwd=REPO, check=True, timeout=60)


def upload(user: str, package: str, version: str) -> dict[str, str]:
    return {"user": user, "package": package, "version": version}


class Notify:
    """``busgate notify`` in a subprocess, with its own rules file."""

    def __init__(self, env: dict[str, str], bus: SessionBus, tmp: Path, rules: str,
                 state: Path | None = None):
        config = tmp / "xdg" / "busgate"
        config.mkdir(parents=True)
        tmp.mkdir(exist_ok=True)
        (config / "notify.toml").write_text(rules)
        self.err = (tmp / "notify.err").open("w+")
        self.proc = subprocess.Popen(
            [*BUSGATE, "notify", "--timeout", "60"], cwd=REPO, stdout=subprocess.DEVNULL,
            stderr=self.err, env={**env, "DBUS_SESSION_BUS_ADDRESS": bus.address,
                                  "XDG_CONFIG_HOME": str(tmp / "xdg"),
                                  "XDG_STATE_HOME": str(state or tmp / "state")})
        self.wait_log("following")

    def log(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def wait_log(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (log := self.log()):
                return log
            assert self.proc.poll() is None, f"busgate notify exited:\n{log}"
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} from busgate notify:\n{self.log()}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(10)
        return self.log()


RULES = """
[follow]
packages = ["hebcal"]
users = ["alice"]

[notify]
max_per_minute = %d

[urgency]
info = "low"
"""


def test_followed_messages_arrive_as_notify_calls_and_unfollowed_do_not(
        typed_daemon, bus, tmp_path):
    proc, _settings = typed_daemon()
    server = NotificationServer(bus.address, capabilities=("body", "body-markup"))
    notify = Notify(proc.env, bus, tmp_path, RULES % 10)
    try:
        publish(proc.env, "upload.done", [upload("alice", "dpkg", "1.0-1"),   # a followed user
                                          upload("bob", "hebcal", "2.0-1"),   # a followed package
                                          upload("bob", "dpkg", "3.0-1")])    # neither
        publish(proc.env, "build.failed", [upload("bob", "hebcal", "2.0-2"),
                                           upload("carol", "coreutils", "9")])
        calls = server.wait_for(3)
        time.sleep(0.5)  # anything unfollowed would arrive by now
        calls = server.snapshot()
    finally:
        log = notify.stop()
        server.close()
    assert [(c.summary, c.urgency) for c in calls] == [
        ("alice uploaded dpkg 1.0-1", desktop.LOW),
        ("bob uploaded hebcal 2.0-1", desktop.LOW),
        ("hebcal 2.0-2 failed to build", desktop.CRITICAL)], log
    # the body: topic and link, escaped for a server that reads markup
    assert calls[0].body == ("notifytest.upload.done\nhttps://tracker.example.org/pkg/dpkg"
                             "?v=1.0-1&amp;x=&lt;1&gt;")
    assert all(c.app_name == "busgate" and c.replaces == 0 for c in calls)
    assert "shown=3" in log and "suppressed=0" in log


def test_a_burst_of_1000_is_rate_limited_into_one_summary(typed_daemon, bus, tmp_path):
    proc, _settings = typed_daemon()
    server = NotificationServer(bus.address)
    notify = Notify(proc.env, bus, tmp_path, RULES % 5)
    try:
        publish(proc.env, "upload.done", [upload("bob", "hebcal", f"{n}") for n in range(1000)])
        calls = server.wait_for(5, timeout=15)
        time.sleep(1.0)  # nothing more may come within the minute
        calls = server.snapshot()
        assert notify.proc.poll() is None
    finally:
        log = notify.stop()
        server.close()
    assert [c.summary for c in calls[:4]] == [f"bob uploaded hebcal {n}" for n in range(4)], log
    assert len(calls) == 5, [c.summary for c in calls]
    summary = calls[4]
    assert summary.summary == "busgate: 996 more messages"
    assert summary.body == "Not shown, over the rate limit: 996 notifytest"
    assert summary.urgency == desktop.LOW
    assert "shown=4" in log and "summaries=1" in log and "delivered=1000" in log


def test_no_notification_server_is_an_error_retried_not_a_crash(typed_daemon, bus, tmp_path):
    proc, _settings = typed_daemon()
    notify = Notify(proc.env, bus, tmp_path, RULES % 10)
    server = None
    try:
        publish(proc.env, "upload.done", [upload("alice", "dpkg", "1")])
        log = notify.wait_log("no notification server on the session bus")
        assert "org.freedesktop.Notifications" in log and "retrying" in log
        server = NotificationServer(bus.address)  # the desktop's server comes up
        publish(proc.env, "upload.done", [upload("alice", "dpkg", "2")])
        calls = server.wait_for(2, timeout=10)
        assert [c.summary for c in calls] == ["alice uploaded dpkg 1", "alice uploaded dpkg 2"]
        notify.wait_log("shown again")
        assert notify.proc.poll() is None
    finally:
        log = notify.stop()
        if server is not None:
            server.close()
    assert notify.proc.returncode == 0, log
    assert "Traceback" not in log


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_storm_longer_than_the_window_updates_one_summary(bus):
    """A storm that never pauses still gets a summary each window, replacing the one on
    screen with the running count; at most max_per_minute calls in any minute."""
    server = NotificationServer(bus.address)
    clock = FakeClock()
    desk = Desk(Notifier(address=bus.address), 3, clock=clock)
    try:
        for n in range(150):  # one a second for 150 s, never quiet
            desk.offer(Notification(f"m{n}"), "svc")
            clock.now += 1.0
        clock.now += 100  # the storm is over
        desk.tick()
        calls = server.wait_for(5, timeout=5)
        desk.offer(Notification("later"), "svc")  # a new message after the storm: shown
        calls = server.wait_for(6, timeout=5)
    finally:
        desk.notifier.close()
        server.close()
    assert [(c.summary, c.replaces) for c in calls] == [
        ("m0", 0), ("m1", 0), ("busgate: 61 more messages", 0),
        ("busgate: 122 more messages", 3), ("busgate: 148 more messages", 3), ("later", 0)]
    assert desk.stats.as_dict() == {"shown": 3, "suppressed": 148, "summaries": 3,
                                    "failures": 0}


def test_a_hung_server_and_a_lost_bus_are_errors_then_retried(bus):
    server = NotificationServer(bus.address)
    clock = FakeClock()
    desk = Desk(Notifier(address=bus.address, timeout=0.3), 10, clock=clock)
    try:
        server.mute = True
        desk.offer(Notification("one"))
        assert desk.stats.failures == 1 and desk.stats.shown == 0
        desk.offer(Notification("two"))  # waits for the retry: no call, no failure
        assert desk.stats.failures == 1
        server.mute = False
        clock.now += 2.0  # RETRY_FIRST
        desk.tick()
        assert [c.summary for c in server.snapshot()] == ["one", "one", "two"]
        assert desk.stats.shown == 2
        server.close()
        bus.close()  # the session ends under a connected client
        with pytest.raises(DesktopError, match="lost the session bus"):
            desk.notifier.notify(Notification("three"))
        with pytest.raises(DesktopError, match="cannot connect to the session bus"):
            desk.notifier.notify(Notification("four"))  # and it tries to connect again
    finally:
        desk.notifier.close()
        server.close()


def test_no_session_bus_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    with pytest.raises(DesktopError, match="DBUS_SESSION_BUS_ADDRESS is not set"):
        Notifier().notify(Notification("x"))
    with pytest.raises(DesktopError, match="cannot connect to the session bus"):
        Notifier(address="unix:path=/nonexistent/bus").notify(Notification("x"))


@pytest.mark.parametrize(("text", "error"), [
    ("[follow]\n", "follows nothing"),
    ("[follow]\npackages=['a']\n[notify]\nmax_per_minute=61\n", "from 2 to 60"),
    ("[follow]\npackages=['a']\n[notify]\nmax_per_minute=1\n", "from 2 to 60"),
    ("[follow]\npackages=['a']\nmaintainers=['x']\n", "unknown key"),
    ("[follow]\npackages=[" + ",".join(f"'p{n}'" for n in range(1001)) + "]\n",
     "more than 1000"),
    ("[follow]\npackages=['a']\n[urgency]\nerror='loud'\n", "low, normal, critical"),
    ("[follow]\npackages=['a']\n[bus]\nendpoints=['http://x']\n", "bus.endpoints"),
    ("x" * (notify_rules.MAX_FILE_BYTES + 1), "larger than"),
])
def test_bad_rules_are_a_clear_error(tmp_path, text, error):
    path = tmp_path / "notify.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error):
        notify_rules.load(path, "org.debian.prod")


def test_rules_defaults_and_urgency():
    rules = notify_rules.parse({"follow": {"topics": ["dak"], "users": ["a,b"]},
                                "urgency": {"warning": "critical"}}, "org.debian.prod")
    assert rules.topics == ("org.debian.prod.dak",) and rules.users == {"a", "b"}
    assert rules.max_per_minute == 10
    assert [rules.urgency_for(s) for s in (10, 20, 30, 40, 25, None)] == [
        desktop.LOW, desktop.NORMAL, desktop.CRITICAL, desktop.CRITICAL, desktop.NORMAL,
        desktop.NORMAL]
    assert notify_rules.default_path({"XDG_CONFIG_HOME": "/x"}) == Path(
        "/x/busgate/notify.toml")


def test_the_example_rules_parse():
    rules = notify_rules.load(REPO / "conf" / "examples" / "notify.toml", "org.debian.prod")
    assert rules.packages == {"hebcal", "dpkg"} and rules.exclude == (
        "org.debian.prod.git.push",)


def test_resume_shows_what_came_while_stopped(typed_daemon, bus, tmp_path):
    proc, _settings = typed_daemon()
    server = NotificationServer(bus.address)
    rules = (RULES % 10).replace("[urgency]", "resume = true\n[urgency]")
    notify = Notify(proc.env, bus, tmp_path, rules)
    try:
        publish(proc.env, "upload.done", [upload("alice", "dpkg", "1")])
        assert len(server.wait_for(1)) == 1
        notify.stop()
        publish(proc.env, "upload.done", [upload("alice", "dpkg", "2")])  # while stopped
        notify = Notify(proc.env, bus, tmp_path / "again", rules, state=tmp_path / "state")
        calls = server.wait_for(2, timeout=30)  # a loaded CI machine: replay, D-Bus
        time.sleep(0.3)
        calls = server.snapshot()
    finally:
        log = notify.stop()
        server.close()
    assert [c.summary for c in calls] == ["alice uploaded dpkg 1", "alice uploaded dpkg 2"], log


def test_resume_after_a_stop_with_nothing_shown_still_shows_what_came(typed_daemon, bus,
                                                                      tmp_path):
    """The position is kept from the first start, not only from the first message."""
    proc, _settings = typed_daemon()
    server = NotificationServer(bus.address)
    rules = (RULES % 10).replace("[urgency]", "resume = true\n[urgency]")
    notify = Notify(proc.env, bus, tmp_path, rules)
    try:
        notify.stop()
        publish(proc.env, "upload.done", [upload("alice", "dpkg", "3")])  # while stopped
        notify = Notify(proc.env, bus, tmp_path / "again", rules, state=tmp_path / "state")
        calls = server.wait_for(1, timeout=30)
    finally:
        log = notify.stop()
        server.close()
    assert [c.summary for c in calls] == ["alice uploaded dpkg 3"], log


@pytest.mark.rabbitmq
def test_followed_messages_from_an_amqp_queue(typed_daemon, bus, tmp_path, vhost, queues):
    import uuid

    queue = f"notify-{uuid.uuid4().hex[:8]}"
    queues.append(queue)
    tag = uuid.uuid4().hex[:8]
    proc, _settings = typed_daemon(amqp={
        "enabled": True, "vhost": vhost, "alternate_exchange": f"unroutable-{tag}",
        "unroutable_queue": f"unroutable-{tag}", "reconnect_min": 0.2, "reconnect_max": 1.0})
    server = NotificationServer(bus.address)
    rules = (RULES % 10) + f'\n[bus]\namqp_queue = "{queue}"\n'
    notify = Notify(proc.env, bus, tmp_path, rules)
    try:
        publish(proc.env, "upload.done", [upload("bob", "dpkg", "1"),
                                          upload("bob", "hebcal", "2")])
        calls = server.wait_for(1, timeout=15)
        time.sleep(0.3)
        calls = server.snapshot()
    finally:
        log = notify.stop()
        server.close()
    assert [c.summary for c in calls] == ["bob uploaded hebcal 2"], log
    assert f"AMQP queue {queue}" in log


def test_an_unreachable_broker_is_exit_69_with_a_message(make_settings, bus, tmp_path):
    from tests.conftest import free_port

    settings = make_settings(amqp={"url": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
                                   "connect_timeout": 1.0})
    rules = tmp_path / "notify.toml"
    rules.write_text('[follow]\nusers = ["alice"]\n[bus]\namqp_queue = "q"\n')
    done = subprocess.run([*BUSGATE, "--config", str(settings.loaded_from[0]), "notify",
                           "--rules", str(rules), "--timeout", "5"], cwd=REPO, env=bus.env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 69, done.stderr
    assert "busgate notify: AMQP queue 'q': " in done.stderr
    assert "Traceback" not in done.stderr
