"""Issue 11 item 1: a source plugs in through the registry alone.

A small third-party distribution, written into ``tmp_path`` (a package plus a
``dist-info`` whose ``entry_points.txt`` registers it under ``busgate.sources``),
is put on ``PYTHONPATH``: no file of busgate is edited, yet ``busgate poll ticker
--once --dry-run``, ``busgate run`` (its events reach a subscriber) and
``busgate check-config`` (its ``validate`` refuses a bad key: exit 2, file and key
named) all know it. Its poller follows the new contract (``poll(state) ->
PollResult``: the core commits its events and cursor).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import config, sources
from gateway.errors import ConfigError
from tests.conftest import BUSGATE, REPO, Daemon, adopt, free_port, write_config

SOURCE_MODULE = '''
"""A test source: every poll emits ``count`` ticks after the last one (a cursor)."""

import argparse
from dataclasses import dataclass

from gateway.errors import ConfigError
from gateway.event import Event
from gateway.polling import PollResult, StatePlan
from gateway.sources import MailSpec, PollerSpec, Source


@dataclass(frozen=True)
class TickerSettings:
    enabled: bool = False
    interval: float = 60.0
    schedule: str = ""
    #: Ticks per poll.
    count: int = 2


def validate(section, settings):
    if section.count <= 0:
        raise ConfigError(f"must be greater than 0, not {section.count}", key="ticker.count")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, help="ticks this poll (overrides ticker.count)")


class TickerPoller:
    name = "ticker"

    def __init__(self, count):
        self.count = count

    def poll(self, state):
        last = int(state.cursor("ticker") or 0)
        ticks = range(last + 1, last + 1 + self.count)
        events = [Event("ticker", "tick", "new", key=f"ticker:{n}", body={"n": n})
                  for n in ticks]
        plan = StatePlan(cursors={"ticker": str(last + self.count)})
        return PollResult(events, plan, summary=f"{self.count} ticks read")

    def close(self):
        pass


def make_poller(settings, options):
    count = settings.ticker.count
    if options is not None and options.count is not None:
        count = options.count
    return TickerPoller(count)


from gateway.messages import Message


class Tick(Message):
    name = "ticker.tick.new.v1"
    topic_tokens = ("ticker", "tick", "new")
    body_schema = {"type": "object", "required": ["n"]}

    @property
    def summary(self):
        return f"tick {self.body['n']}"


TYPES = [Tick]


def topic_overrides(section):
    return {Tick: ("ticker", "tick", "new")} if section.count < 100 else {Tick: ("big", "tick")}


SOURCE = Source(name="ticker", section="ticker", settings=TickerSettings, validate=validate,
                poller=PollerSpec(factory="busgate_ticker:make_poller",
                                  add_arguments="busgate_ticker:add_arguments",
                                  help="count ticks"),
                messages="busgate_ticker:TYPES", topic_overrides=topic_overrides,
                mail=MailSpec(claims="busgate_ticker:claims", parse="busgate_ticker:parse_mail",
                              priority=5),
                description="a test source")


def claims(message):
    return message.get("X-Ticker") is not None


def parse_mail(message, raw, settings):
    n = int(message["X-Ticker"])
    return [Event("ticker", "tick", "mailed", key=f"ticker:mail:{n}", body={"n": n})]
'''


def install_source(root: Path, name: str = "busgate_ticker", entry: str = "ticker",
                   target: str = "busgate_ticker:SOURCE", module: str = SOURCE_MODULE) -> Path:
    """A distribution registering one source, as pip would lay it out under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.py").write_text(module)
    meta = root / f"{name}-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (meta / "entry_points.txt").write_text(f"[busgate.sources]\n{entry} = {target}\n")
    return root


@pytest.fixture
def ticker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test source installed for this process and its children."""
    root = install_source(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p))
    sources.reset()
    yield root
    sources.reset()


def busgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BUSGATE, *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env=env)


def base_config(tmp_path: Path, **tables: dict[str, object]) -> Path:
    values: dict[str, object] = {
        "state": {"dir": str(tmp_path / "var")},
        "zmq": {"publish": f"tcp://127.0.0.1:{free_port()}",
                "replay": f"tcp://127.0.0.1:{free_port()}", "heartbeat_interval": 0.5},
        "dak": {"signatures": "ignore"},
        **tables,
    }
    return write_config(tmp_path / "busgate.toml", values)


def test_poll_once_dry_run_runs_the_registered_source(ticker: Path, tmp_path: Path) -> None:
    conf = base_config(tmp_path, ticker={"count": 2})
    done = busgate("poll", "ticker", "--once", "--dry-run", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["topic"], r["msg"]) for r in records] == [
        ("org.debian.dev.ticker.tick.new", {"n": 1}), ("org.debian.dev.ticker.tick.new", {"n": 2})]
    assert not (tmp_path / "var").exists()  # a dry run stores nothing

    # its own option, from its PollerSpec.add_arguments, overrides its table
    done = busgate("poll", "ticker", "--once", "--dry-run", "--count", "3", "--config", str(conf))
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 3, done.stderr
    assert "ticker" in busgate("poll", "--help").stdout


def test_poll_once_commits_events_and_cursor_together(ticker: Path, tmp_path: Path) -> None:
    conf = base_config(tmp_path, ticker={"count": 2})
    adopt(config.load(conf))  # a real poll stores only into a started daemon's state
    for expected in ("2 new events", "2 new events"):
        done = busgate("poll", "ticker", "--once", "--config", str(conf))
        assert done.returncode == 0 and expected in done.stdout, done.stderr
        assert "2 ticks read" in done.stdout
    from gateway import runtime

    store = runtime.open_store(config.load(conf))
    try:
        assert store.cursor("ticker") == "4" and store.last_seq_id() == 4
    finally:
        store.close()


def test_check_config_runs_the_sources_validate(ticker: Path, tmp_path: Path) -> None:
    conf = base_config(tmp_path, ticker={"count": 0})
    for command in ("check-config", "run"):
        done = busgate(command, "--config", str(conf))
        assert done.returncode == 2, (command, done.stderr)
        assert f"{conf}: ticker.count: must be greater than 0" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    conf = base_config(tmp_path, ticker={"count": 5, "bogus": 1})
    done = busgate("check-config", "--config", str(conf))
    assert done.returncode == 2 and f"{conf}: ticker.bogus: unknown key" in done.stderr
    conf = base_config(tmp_path, ticker={"count": 5})
    done = busgate("check-config", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert "[ticker]\nenabled = false\ninterval = 60.0\nschedule = \"\"\ncount = 5" in done.stdout


def test_run_schedules_the_source_and_a_subscriber_gets_its_events(
        ticker: Path, tmp_path: Path) -> None:
    from gateway import discovery, heartbeat
    from gateway.subscriber import Subscriber

    conf = base_config(tmp_path, ticker={"enabled": True, "interval": 0.2, "count": 1})
    settings = config.load(conf)  # this process knows the source too (sys.path)
    assert settings.ticker.count == 1
    proc = Daemon(conf, tmp_path / "daemon.log").start()
    try:
        with Subscriber(discovery.discover(settings), resume_from=0,
                        heartbeat_topic=heartbeat.topic(settings.topic_prefix)) as bus:
            got = [(m.topic, m.body["n"]) for m in bus.messages(count=3, timeout=10)]
        assert got == [("org.debian.dev.ticker.tick.new", n) for n in (1, 2, 3)], \
            proc.output()
    finally:
        proc.kill()
    assert "poller ticker every 0.2 s" in proc.output()


def test_unknown_table_lists_the_registered_ones(ticker: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[tickr]\ncount = 1\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert (caught.value.path, caught.value.key) == (str(path), "tickr")
    for valid in ("ticker", "debbugs", "wannabuild", "git", "dak", "zmq"):
        assert valid in str(caught.value)


def test_settings_of_an_absent_table_are_the_sources_defaults(ticker: Path) -> None:
    settings = config.Settings()
    assert settings.ticker.count == 2 and settings.section("ticker").interval == 60.0
    changed = settings.with_section("ticker", count=7)
    assert changed.ticker.count == 7 and settings.ticker.count == 2
    assert changed != settings and changed.with_section("ticker", count=2) == settings
    with pytest.raises(AttributeError):
        settings.nothing_here  # noqa: B018
    assert config.Settings().with_section("smtp", port=2525).smtp.port == 2525


def test_a_duplicate_or_broken_source_is_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    install_source(tmp_path / "a")
    install_source(tmp_path / "b", name="busgate_other", entry="debbugs",
                   target="busgate_other:SOURCE",
                   module=SOURCE_MODULE.replace('name="ticker"', 'name="debbugs"')
                   .replace('section="ticker"', 'section="tickets"'))
    install_source(tmp_path / "c", name="busgate_broken", entry="broken",
                   target="busgate_broken:NOPE", module="NOTHING = 1\n")
    install_source(tmp_path / "d", name="busgate_kind", entry="kind",
                   target="busgate_kind:SOURCE",
                   module=SOURCE_MODULE.replace('section="ticker"',
                                                'section="ticker", spool_kinds={"mail": "x:y"}'))
    install_source(tmp_path / "e", name="busgate_twin", entry="twin",
                   target="busgate_twin:SOURCE",
                   module=SOURCE_MODULE.replace('name="ticker"', 'name="twin"')
                   .replace('section="ticker"', 'section="twin"')
                   .replace("busgate_ticker:", "busgate_twin:"))
    cases = [([tmp_path / "a", tmp_path / "b"], "two sources are named 'debbugs'"),
             ([tmp_path / "a", tmp_path / "e"], "message types clash: two message types are "
                                                 "named 'ticker.tick.new.v1'"),
             ([tmp_path / "c"], "source 'broken' (busgate_broken:NOPE) cannot be loaded"),
             ([tmp_path / "d"], "sources 'dak' and 'ticker' both parse the 'mail' spool kind")]
    conf = base_config(tmp_path)
    for paths, words in cases:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
        for command in ("check-config", "run"):
            done = busgate(command, "--config", str(conf), env=env)
            assert done.returncode == 2 and words in done.stderr, (command, done.stderr)
            assert "Traceback" not in done.stderr
    assert not (tmp_path / "var").exists()


def test_mail_goes_to_the_source_that_claims_it_first(ticker: Path, tmp_path: Path) -> None:
    conf = base_config(tmp_path)
    mail = b"From: someone@example.org\nX-Ticker: 7\nSubject: tick\n\nbody\n"
    done = subprocess.run([*BUSGATE, "mail", "--dry-run", "--config", str(conf)], input=mail,
                          capture_output=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    [record] = [json.loads(line) for line in done.stdout.splitlines()]
    assert (record["topic"], record["msg"]) == ("org.debian.dev.ticker.tick.mailed", {"n": 7})
    assert [s.name for s in sources.mail_sources()] == ["ticker", "debbugs", "dak"]


def test_entry_points_reader_agrees_with_importlib_metadata(ticker: Path) -> None:
    from importlib import metadata

    for group in ("busgate.sources", "console_scripts", "pytest11"):
        expected = sorted((p.name, p.value) for p in metadata.entry_points(group=group))
        assert sorted(sources.entry_points(group)) == expected, group
    assert ("ticker", "busgate_ticker:SOURCE") in sources.entry_points("busgate.sources")


def test_builtin_sources_defaults_pass_their_validate() -> None:
    sources.reset()
    settings = config.Settings()
    config.check_sources(settings)
    names = set(sources.registry())
    assert {"dak", "debbugs", "wanna-build", "git"} <= names
    assert [s.name for s in sources.mail_sources()][-1] == "dak"  # dak takes what is left
    assert sources.command("git-hook") is not None
    assert set(sources.spool_kinds()) == {"mail"}



def test_a_source_command_runs_without_argparse_or_importlib_metadata(tmp_path: Path) -> None:
    """``busgate git-hook`` (every push) finds its command through the registry, by
    reading entry_points.txt itself (importing importlib.metadata costs ~25 ms) and its
    usual options without argparse."""
    conf = write_config(tmp_path / "c.toml", {"state": {"dir": str(tmp_path / "var")}})
    probe = ("import sys; sys.argv = ['busgate', 'git-hook', '--dry-run', '--repo', 'r',"
             f" '--config', {str(conf)!r}]; from gateway.cli import main; code = main();"
             "print(code, sorted(m for m in ('argparse', 'importlib.metadata', 'gettext')"
             " if m in sys.modules), 'adapters.scm.source' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], input=b"", capture_output=True,
                         cwd=REPO, timeout=60)
    assert out.stdout.decode().split() == ["0", "[]", "True"], out.stderr


def test_type_index_has_the_sources_types_with_their_deployment_tokens(ticker: Path) -> None:
    settings = config.Settings()
    index = sources.type_index(settings)
    tick = index.lookup(("ticker", "tick", "new"))
    assert tick.name == "ticker.tick.new.v1" and tick({"n": 3}).summary == "tick 3"
    assert index.by_name("ticker.tick.new.v1") is tick
    moved = sources.type_index(settings.with_section("ticker", count=500))
    assert moved.lookup(("big", "tick")) is tick
    assert moved.lookup(("ticker", "tick", "new")) is not tick
