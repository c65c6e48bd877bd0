"""``busgate poll debbugs`` as a real process against the local SOAP server."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from conftest import BUSGATE, REPO, adopt, write_config

from fixtures.debbugs.soapserver import FakeDebbugs
from gateway import config, pollers


@pytest.fixture
def fake() -> Iterator[FakeDebbugs]:
    server = FakeDebbugs().start()
    yield server
    server.stop()


def busgate(conf, *args: str) -> subprocess.CompletedProcess[str]:
    if "--dry-run" not in args:
        adopt(config.load(conf))  # a real poll stores only into a started daemon's state
    return subprocess.run([*BUSGATE, "poll", "--config", str(conf), "debbugs", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_once_dry_run_options_override_config(fake: FakeDebbugs, tmp_path) -> None:
    fake.put(10, package="udisks2", subject="héllo")
    fake.put(11, package="samba-common", source="samba")
    conf = write_config(tmp_path / "busgate.toml", {
        "state": {"dir": str(tmp_path / "var")},
        "debbugs": {"url": "http://127.0.0.1:9/nothing", "packages": ["nothing"],
                    "watch_new": False},
    })
    done = busgate(conf, "--once", "--dry-run", "--backfill", "--url", fake.url,
                   "--package", "udisks2", "--source", "samba")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["topic"], r["msg"]["bug"]) for r in lines] == [
        ("org.debian.dev.debbugs.bug.new", 10), ("org.debian.dev.debbugs.bug.new", 11)]
    assert lines[0]["msg"]["title"] == "héllo"
    assert not (tmp_path / "var" / "busgate.sqlite").exists()  # dry run: nothing stored

    done = busgate(conf, "--once", "--url", fake.url, "--package", "udisks2")
    assert done.returncode == 0 and "0 new events" in done.stdout  # baseline
    settings = config.load(conf)
    from gateway import runtime

    assert set(runtime.open_store(settings).snapshots("debbugs")) == {"10"}


def test_once_failure_exits_tempfail_and_stores_nothing(fake: FakeDebbugs, tmp_path) -> None:
    fake.put(10, package="udisks2")
    fake.failures["get_status"] = ("fault", "Debbugs::Status died")
    conf = write_config(tmp_path / "busgate.toml", {
        "state": {"dir": str(tmp_path / "var")},
        "debbugs": {"url": fake.url, "packages": ["udisks2"], "watch_new": False,
                    "retries": 0},
    })
    done = busgate(conf, "--once")
    assert done.returncode == 75
    assert "Debbugs::Status died" in done.stderr and "nothing stored" in done.stderr


def test_registry_builds_the_poller(make_settings, fake: FakeDebbugs) -> None:
    settings = make_settings(debbugs={"enabled": True, "url": fake.url, "interval": 60})
    assert "debbugs" in pollers.enabled(settings)
    poller = pollers.make("debbugs", settings)
    assert poller.name == "debbugs" and pollers.interval("debbugs", settings) == 60.0


def test_example_config_documents_every_debbugs_key() -> None:
    import dataclasses
    import tomllib

    from adapters.debbugs.settings import DebbugsSettings

    example = REPO / "conf" / "examples" / "debbugs.toml"
    table = tomllib.loads(example.read_text())["debbugs"]
    fields = {f.name for f in dataclasses.fields(DebbugsSettings)}
    assert set(table) == fields
    assert config.load(example).debbugs == DebbugsSettings()  # the defaults, written out


def test_once_against_a_dripping_server_ends_at_the_deadline(fake: FakeDebbugs, tmp_path) -> None:
    """Issue 9 #8: a server sending one byte a second held `--once` past 120 s with
    timeout = 3. The call now ends at its deadline, exit 75, nothing stored."""
    import time

    fake.put(10, package="udisks2")
    fake.failures["*"] = ("drip", 1.0)
    conf = write_config(tmp_path / "busgate.toml", {
        "state": {"dir": str(tmp_path / "var")},
        "debbugs": {"url": fake.url, "packages": ["udisks2"], "timeout": 3.0, "retries": 1},
    })
    started = time.monotonic()
    done = busgate(conf, "--once")
    elapsed = time.monotonic() - started
    assert done.returncode == 75, done.stderr
    assert "within the timeout (3 s" in done.stderr and "nothing stored" in done.stderr
    assert elapsed < 3 + 7, elapsed  # deadline + interpreter start-up under load
    assert len(fake.calls) == 1  # not retried after the deadline
