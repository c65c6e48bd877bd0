"""``busgate irc`` against a real IRC server (ngircd on 127.0.0.1) and a second client
reading the channels: lines from a real daemon, a 1,000-message burst under flood
control, nick collision, reconnect after the server restarts."""

from __future__ import annotations

import dataclasses
import itertools
import re
import signal
import subprocess
import time

from gateway.config import IrcSettings
from gateway.ircflood import Throttle
from gateway.ircrelay import Relay
from tests.conftest import BUSGATE, REPO

COLOUR = re.compile(r"^\x03(\d\d)")


def publish(env: dict[str, str], *args: str, text: str = "") -> None:
    subprocess.run([*BUSGATE, "publish", *args], input=text, text=True, env=env, cwd=REPO,
                   check=True, timeout=60)


def start_relay(env: dict[str, str], log_path, timeout: float = 30):  # type: ignore[no-untyped-def]
    handle = log_path.open("ab")
    proc = subprocess.Popen([*BUSGATE, "irc", "--timeout", str(timeout)], env=env, cwd=REPO,
                            stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    return proc


def stop_relay(proc) -> int:  # type: ignore[no-untyped-def]
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(10)


def irc_table(port: int, **extra: object) -> dict[str, object]:
    return {"port": port, "nick": "relay", "reconnect_min": 0.2, "reconnect_max": 1.0,
            **extra}


def test_daemon_messages_reach_routed_channels_as_coloured_lines(daemon, ngircd, reader,
                                                                  tmp_path):
    proc, _ = daemon(irc=irc_table(ngircd.port, channels=["#everything"]))
    config = proc.config_path
    config.write_text(config.read_text() + '\n[[irc.routes]]\nchannels = ["#logger"]\n'
                      'topics = ["logger."]\n\n[[irc.routes]]\nchannels = ["#dak"]\n'
                      'topics = ["dak."]\n')
    watcher = reader("watcher", ["#everything", "#logger", "#dak"])
    relay = start_relay(proc.env, tmp_path / "relay.log")
    try:
        assert watcher.wait_for(lambda: {c for n, c in watcher.joins if n == "relay"}
                                >= {"#logger", "#dak"}, 10), (tmp_path / "relay.log").read_text()
        time.sleep(0.3)  # the relay's subscription is made before it joins; let it settle
        publish(proc.env, "--message", "hello from the bus")
        publish(proc.env, "--message", "second \x0304red\r\nPRIVMSG #dak :injected")
        publish(proc.env, "--message", "long " + "é" * 3000)
        assert watcher.wait_for(lambda: len(watcher.lines("#logger")) >= 3, 10), \
            (tmp_path / "relay.log").read_text()
        time.sleep(0.3)
    finally:
        assert stop_relay(relay) == 0
    logger = watcher.lines("#logger")
    assert [s.nick for s in logger] == ["relay"] * 3
    first, second, long = (s.text for s in logger)
    # cut by the relay to max_line_bytes, so the server cut nothing: it ends as we ended it
    assert len(long.encode()) <= 350 and long.endswith("é…")
    assert COLOUR.match(first) and "logger.message" in first and "hello from the bus" in first
    # control characters arrive escaped: no colour, no second command
    assert "\\x0304red" in second and "PRIVMSG #dak :injected" in second
    assert "\r" not in second and "\n" not in second
    assert watcher.lines("#dak") == []  # routed by topic: nothing for dak.
    assert watcher.lines("#everything") == []  # channels with routes only get routed lines
    assert "3 lines sent" in (tmp_path / "relay.log").read_text()


def test_a_burst_of_1000_messages_is_bounded_and_summarised(daemon, ngircd, reader, tmp_path):
    limits = {"lines_per_minute": 120, "burst": 3, "queue_lines": 4,
              "server_lines_per_minute": 240, "server_burst": 4}
    proc, _ = daemon(irc=irc_table(ngircd.port, channels=["#flood"], **limits))
    watcher = reader("watcher", ["#flood"])
    relay = start_relay(proc.env, tmp_path / "relay.log")
    try:
        assert watcher.wait_for(lambda: ("relay", "#flood") in watcher.joins, 10)
        time.sleep(0.3)
        start = time.monotonic()
        publish(proc.env, text="".join(f"burst {i}\n" for i in range(1000)))
        more = re.compile(r"… (\d+) more messages not shown")
        assert watcher.wait_for(lambda: any(more.search(s.text)
                                            for s in watcher.lines("#flood")), 15), \
            (tmp_path / "relay.log").read_text()
        time.sleep(1.0)  # anything else that would still come
        elapsed = time.monotonic() - start
        publish(proc.env, "--message", "after the flood")
        assert watcher.wait_for(lambda: any("after the flood" in s.text
                                            for s in watcher.lines("#flood")), 10)
        assert relay.poll() is None  # still running
    finally:
        assert stop_relay(relay) == 0
    lines = watcher.lines("#flood")
    flood = [s for s in lines if "after the flood" not in s.text]
    # bounded: the burst, then the sustained rate (2 a second), whatever came in
    assert len(flood) <= limits["burst"] + 2 * elapsed + 1
    shown = [s for s in flood if "burst " in s.text]
    folded = sum(int(m.group(1)) for s in flood if (m := more.search(s.text)))
    assert len(shown) + folded == 1000  # every message is a line or counted in one
    numbers = [int(s.text.rsplit("burst ", 1)[1]) for s in shown]
    assert numbers == sorted(numbers) and numbers[:3] == [0, 1, 2]  # in order
    # in any one-second window, no more than the burst plus a second's budget (and one
    # for the jitter of arrival times)
    times = [s.when for s in lines]
    assert all(sum(1 for t in times if w <= t < w + 1.0) <= limits["burst"] + 2 + 1
               for w in times)
    log = (tmp_path / "relay.log").read_text()
    assert "1 connections" in log and "Excess Flood" not in ngircd.output()


def _relay(port: int, **changes: object) -> Relay:
    conf = dataclasses.replace(IrcSettings(), **{**irc_table(port), **changes})
    return Relay(conf, ["#room"])


def _step_until(relay: Relay, predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        relay.step(0.02)
        if predicate():
            return True
    return bool(predicate())


def test_nick_collision_takes_the_alternates_then_underscores(ngircd, reader):
    watcher = reader("relay", ["#room"], wait=False)  # holds the relay's nick
    other = reader("relay2", ["#other"], wait=False)  # and its first alternate
    watcher.wait_joined()
    other.wait_joined()
    relay = _relay(ngircd.port, alt_nicks=["relay2"])
    try:
        # ngircd delays a client's commands after each error reply (its flood penalty):
        # the JOIN after two 433s is served about 5 s later.
        assert _step_until(relay, lambda: "#room" in relay.joined, 12)
        assert relay.nicks_tried == ["relay", "relay2", "relay_"]
        assert relay.nick == "relay_"
        relay.offer("#room", "hello")
        assert _step_until(relay, lambda: watcher.lines("#room"), 5)
        assert [(s.nick, s.text) for s in watcher.lines("#room")] == [("relay_", "hello")]
        assert ("relay_", "#room") in watcher.joins
    finally:
        relay.close()


def test_reconnects_after_the_server_restarts_and_keeps_what_waited(ngircd, reader):
    relay = _relay(ngircd.port)
    try:
        assert _step_until(relay, lambda: "#room" in relay.joined, 5)
        ngircd.stop()
        assert _step_until(relay, lambda: relay.connection is None, 5)
        relay.offer("#room", "said while the server was down")
        assert _step_until(relay, lambda: relay.failures >= 2, 5)  # refused, backing off
        ngircd.start()
        watcher = reader("watcher", ["#room"])
        assert _step_until(relay, lambda: watcher.lines("#room"), 10), ngircd.output()
        assert relay.connects == 2 and relay.failures == 0
        assert [s.text for s in watcher.lines("#room")] == ["said while the server was down"]
    finally:
        relay.close()


def test_refused_connections_back_off_exponentially(tmp_path):
    from tests.conftest import free_port

    relay = _relay(free_port(), reconnect_min=0.05, reconnect_max=0.4)
    attempts: list[float] = []
    real = relay._connect

    def counted() -> None:
        attempts.append(time.monotonic())
        real()

    relay._connect = counted  # type: ignore[method-assign]
    _step_until(relay, lambda: False, 1.0)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert 4 <= len(attempts) <= 9, gaps
    assert gaps[0] < gaps[2] and all(g <= 0.4 * 1.1 + 0.1 for g in gaps)


def test_throttle_holds_lines_while_a_channel_is_not_joined():
    throttle = Throttle(lines_per_minute=60, burst=2, queue_lines=3,
                        server_lines_per_minute=60, server_burst=2, now=0.0)
    throttle.offer("#a", "one", 0.0)
    assert throttle.due(0.0, open_=set()) == []
    assert throttle.due(0.0, open_={"#a"}) == [("#a", "one")]




def test_a_silent_server_is_pinged_dropped_and_reconnected(ngircd, reader):
    """ngircd stopped with SIGSTOP keeps the TCP connection open and says nothing: the
    relay pings it, drops it, fails to be welcomed by it, and is back after SIGCONT."""
    relay = _relay(ngircd.port, connect_timeout=0.5)
    relay.keepalive, relay.silence = 0.3, 0.8
    try:
        assert _step_until(relay, lambda: relay.welcomed, 5)
        assert _step_until(relay, lambda: relay.last_ping > relay.last_heard + 0.2, 3)
        assert ngircd.proc is not None
        ngircd.proc.send_signal(signal.SIGSTOP)
        try:
            assert _step_until(relay, lambda: relay.failures >= 2, 5)  # dropped, no welcome
            assert relay.connection is None or not relay.welcomed
        finally:
            ngircd.proc.send_signal(signal.SIGCONT)
        # welcomed again (maybe as relay_: the dropped connection may still hold the nick)
        assert _step_until(relay, lambda: relay.welcomed, 6), ngircd.output()
        assert relay.connects >= 2 and relay.failures == 0
    finally:
        relay.close()


def test_tls_and_a_refused_certificate(ngircd, reader):
    watcher = reader("watcher", ["#room"])
    relay = _relay(ngircd.tls_port, tls=True, tls_verify=False)
    try:
        assert _step_until(relay, lambda: "#room" in relay.joined, 5), ngircd.output()
        relay.offer("#room", "over TLS")
        assert _step_until(relay, lambda: watcher.lines("#room"), 5)
        assert "TLS" in ngircd.output()
    finally:
        relay.close()
    # verified (the default): a self-signed certificate is refused, and retried later
    relay = _relay(ngircd.tls_port, tls=True)
    try:
        assert _step_until(relay, lambda: relay.failures >= 1, 3)
        assert not relay.welcomed and relay.connection is None
    finally:
        relay.close()
