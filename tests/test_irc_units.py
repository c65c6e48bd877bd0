"""``busgate irc`` without a server: flood control on a simulated clock, the routing
table, the line's colour and byte bound, and the ``[irc]`` settings check-config refuses."""

from __future__ import annotations

import re
import subprocess

import pytest

from gateway import config, display
from gateway.errors import ConfigError
from gateway.ircflood import Throttle
from gateway.ircroute import MIRC_PALETTE, Router, line, mirc_colour
from gateway.messages import PACKAGE_HEADER_PREFIX, SCHEMA_HEADER, TypeIndex
from tests.conftest import BUSGATE, REPO

MORE = re.compile(r"… (\d+) more messages? not shown")


def throttle(**changes: int) -> Throttle:
    limits = {"lines_per_minute": 12, "burst": 4, "queue_lines": 8,
              "server_lines_per_minute": 30, "server_burst": 4, **changes}
    return Throttle(now=0.0, **limits)


def run_for(t: Throttle, seconds: float, start: float = 0.0, tick: float = 0.1):
    sent: list[tuple[float, str, str]] = []
    now = start
    while now < start + seconds:
        sent += [(now, channel, text) for channel, text in t.due(now)]
        now += tick
    return sent


def test_a_burst_of_1000_costs_the_queue_and_one_overflow_line_at_the_rate():
    t = throttle()
    for i in range(1000):
        t.offer("#c", f"m{i}", 0.0)
    assert t.pending() == 9  # 8 lines and one overflow entry: memory is bounded
    sent = run_for(t, 600)
    texts = [text for _, _, text in sent]
    assert texts[:8] == [f"m{i}" for i in range(8)]
    assert len(texts) == 9 and MORE.search(texts[8]).group(1) == "992"
    # never more than the burst plus the sustained rate in any minute
    for start, _, _ in sent:
        assert sum(1 for when, _, _ in sent if start <= when < start + 60) <= 4 + 12
    assert sent[4][0] >= 4.9  # after the burst of 4: one line every 5 s
    assert t.stats.folded == 992 and t.stats.overflow_lines == 1 and t.stats.sent == 9
    # the channel's queue opens again after the overflow line
    t.offer("#c", "later", 601.0)
    assert t.due(700.0) == [("#c", "later")]


def test_the_connection_budget_bounds_all_channels_together_and_is_shared_fairly():
    t = throttle(lines_per_minute=60, burst=10, server_lines_per_minute=12, server_burst=4)
    for i in range(8):
        for channel in ("#a", "#b", "#c"):
            t.offer(channel, f"{channel} {i}", 0.0)
    sent = run_for(t, 60)
    # each channel alone could send 10 + 60: the connection's 4 + 12 is the bound
    assert 15 <= len(sent) <= 4 + 12
    first = [channel for _, channel, _ in sent[:6]]
    assert sorted(first.count(c) for c in ("#a", "#b", "#c")) == [2, 2, 2]
    assert t.pending() == 24 - len(sent) and 0 < t.next_due(60.0) <= 5.0


def test_lines_wait_for_a_closed_channel_and_keep_their_order():
    t = throttle()
    for text in ("one", "two"):
        t.offer("#a", text, 0.0)
    assert t.due(0.0, open_=set()) == []
    assert t.due(1.0, open_={"#a"}) == [("#a", "one"), ("#a", "two")]
    assert t.next_due(1.0) is None


def envelope(topic: str, packages: tuple[str, ...] = (), **msg: object) -> dict:
    headers = {SCHEMA_HEADER: "base.message",
               **{f"{PACKAGE_HEADER_PREFIX}{p}": True for p in packages}}
    return {"topic": f"org.debian.dev.{topic}", "msg": msg, "headers": headers,
            "timestamp": 0}


def router(routes: list[dict], channels: list[str] = ()) -> Router:  # type: ignore[assignment]
    conf = config.IrcSettings(channels=list(channels),
                              routes=[config.IrcRoute(**r) for r in routes])
    return Router.from_settings(conf, "org.debian.dev")


def test_routes_by_topic_exclude_and_package_each_channel_once():
    table = router([{"channels": ["#uploads"], "topics": ["dak.upload"]},
                    {"channels": ["#gcc", "#uploads"], "packages": ["gcc-14"]},
                    {"channels": ["#buildd"], "topics": ["org.debian.dev.wannabuild."],
                     "exclude": ["wannabuild.state"]}], channels=["#spare"])
    index = TypeIndex(())
    assert table.channels == ["#spare", "#uploads", "#gcc", "#buildd"]
    assert table.channels_for(envelope("dak.upload", ("gcc-14",)), index) == ["#uploads", "#gcc"]
    assert table.channels_for(envelope("dak.upload", ("hello",)), index) == ["#uploads"]
    assert table.channels_for(envelope("debbugs.new", ("gcc-14",)), index) == ["#gcc",
                                                                               "#uploads"]
    assert table.channels_for(envelope("wannabuild.built"), index) == ["#buildd"]
    assert table.channels_for(envelope("wannabuild.state.x"), index) == []
    assert table.topics == ()  # the package route takes any topic
    assert router([{"channels": ["#u"], "topics": ["dak.upload"]}]).topics == (
        "org.debian.dev.dak.upload",)
    # no routes: every configured channel
    assert router([], channels=["#a", "#b"]).channels_for(envelope("x.y"), index) == ["#a",
                                                                                       "#b"]


def test_the_line_is_coloured_per_service_bounded_in_bytes_and_keeps_its_link():
    index = TypeIndex(())
    env = envelope("dak.upload", text="é" * 600)
    desc = display.Description(display.message_of(env, index), "é" * 600,
                               "https://example.org/x")
    text = line(env, desc, 200)
    assert len(text.encode()) <= 200
    assert text.startswith(f"\x03{mirc_colour('dak')}dak.upload\x0f ")
    assert text.endswith(" https://example.org/x") and "…" in text
    assert mirc_colour("dak") == mirc_colour("dak") and mirc_colour("dak") in MIRC_PALETTE
    # a link that leaves no room for a summary is dropped, not cut
    long = display.Description(desc.message, "summary", "https://example.org/" + "a" * 300)
    assert "https://" not in line(env, long, 200) and "summary" in line(env, long, 200)


@pytest.mark.parametrize(("table", "key"), [
    ('nick = "9lives"', "irc.nick"),
    ('alt_nicks = ["ok", "has space"]', "irc.alt_nicks"),
    ('channels = ["debian"]', "irc.channels"),
    ('channels = ["#a,#b"]', "irc.channels"),
    ("lines_per_minute = 0", "irc.lines_per_minute"),
    ("queue_lines = -1", "irc.queue_lines"),
    ("max_line_bytes = 600", "irc.max_line_bytes"),
    ("reconnect_min = 10.0\nreconnect_max = 5.0", "irc.reconnect_max"),
    ("port = 0", "irc.port"),
    ('routes = [{topics = ["dak."]}]', "irc.routes[0].channels"),
    ('routes = [{channels = ["#a"], topic = ["dak."]}]', "irc.routes.topic"),
    ('routes = ["#a"]', "irc.routes"),
])
def test_bad_irc_settings_are_refused_naming_the_key(tmp_path, table, key):
    path = tmp_path / "busgate.toml"
    path.write_text(f"[irc]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert key in str(caught.value)


def test_routes_load_as_tables_or_inline_and_check_config_prints_them(tmp_path):
    path = tmp_path / "busgate.toml"
    path.write_text('[irc]\nchannels = ["#all"]\n\n[[irc.routes]]\nchannels = ["#uploads"]\n'
                    'topics = ["dak.upload"]\n\n[[irc.routes]]\nchannels = ["#gcc"]\n'
                    'packages = ["gcc-14"]\n')
    settings = config.load(path)
    assert [r.channels for r in settings.irc.routes] == [["#uploads"], ["#gcc"]]
    inline = tmp_path / "inline.toml"
    inline.write_text('[irc]\nroutes = [{channels = ["#uploads"], topics = ["dak.upload"]}, '
                      '{channels = ["#gcc"], packages = ["gcc-14"]}]\nchannels = ["#all"]\n')
    assert config.load(inline).irc == settings.irc
    out = subprocess.run([*BUSGATE, "check-config", "--config", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    printed = tmp_path / "printed.toml"
    printed.write_text(out.stdout.split("\n", 1)[1])
    assert config.load(printed).irc == settings.irc  # what it prints loads back the same


def test_the_documented_route_example_loads(tmp_path):
    text = (REPO / "conf" / "busgate.toml").read_text()
    example = re.search(r"^# (routes = \[\{.*?\}\])$", text, re.M | re.S).group(1)
    path = tmp_path / "busgate.toml"
    path.write_text("[irc]\n" + re.sub(r"\n#\s+", "\n  ", example) + "\n")
    routes = config.load(path).irc.routes
    assert [r.channels for r in routes] == [["#debian-uploads"], ["#gcc"], ["#buildd"]]
    assert routes[2].exclude == ["wannabuild.heartbeat"]


def test_irc_without_channels_says_so(tmp_path):
    path = tmp_path / "busgate.toml"
    path.write_text(f'[state]\ndir = "{tmp_path}/var"\n')
    out = subprocess.run([*BUSGATE, "irc", "--config", str(path), "--timeout", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no channels configured" in out.stderr


def test_the_relay_unit_is_accepted_by_systemd_analyze(tmp_path):
    import shutil
    from pathlib import Path

    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = (REPO / "contrib/systemd/busgate-irc.service").read_text()
    binary = shutil.which("busgate", path=str(Path(BUSGATE[0]).parent)) or "/bin/true"
    path = tmp_path / "busgate-irc.service"
    path.write_text(unit.replace("/usr/bin/busgate", binary))
    result = subprocess.run([tool, "verify", "--man=no", str(path)], capture_output=True,
                            text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "busgate-irc.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
    assert "DynamicUser=yes" in unit and "ProtectSystem=strict" in unit
    assert "StateDirectory=busgate-irc" in unit and "--state-dir /var/lib/busgate-irc" in unit


def test_without_ngircd_the_tests_skip_locally_and_fail_in_ci(tmp_path, monkeypatch):
    import conftest
    import irc_helpers

    monkeypatch.setattr(irc_helpers, "NGIRCD", None)
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install ngircd"):
        irc_helpers.Ngircd(tmp_path)
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true and ngircd is not installed"):
        irc_helpers.Ngircd(tmp_path)
