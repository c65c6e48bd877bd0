"""Issue 11 item 2: ``check-config`` refuses what ``run`` would refuse, the same way.

Each misconfiguration below goes to a real ``busgate check-config`` and a real
``busgate run``; both must exit 2 and name the file and the key (before: run crashed
and retried forever, exited 69, or listened somewhere else than it logged).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUSGATE, REPO, free_port, write_config

UNWRITABLE = "/proc/1/busgate-test"  # /proc/1 is not writable, not even by root


def _not_a_dir(tmp: Path) -> str:
    blocker = tmp / "blocker"
    blocker.write_text("a file where a directory should be")
    return str(blocker / "var")


#: id, settings overriding a working base, the key the error must name, words it must say
CASES: list[tuple[str, Any, str, str]] = [
    ("debbugs-without-url", {"debbugs": {"enabled": True}}, "debbugs.url", "no SOAP URL"),
    ("debbugs-url-not-http", {"debbugs": {"enabled": True, "url": "bugs.debian.org/soap"}},
     "debbugs.url", "http:// or https://"),
    ("wannabuild-without-dsn", {"wannabuild": {"enabled": True}}, "wannabuild.dsn",
     "no database connection string"),
    ("smtp-without-recipients", {"smtp": {"enabled": True}}, "smtp.recipients",
     "accepts no recipient"),
    ("smtp-blank-recipient", {"smtp": {"enabled": True, "recipients": [" "]}},
     "smtp.recipients", "accepts no recipient"),
    ("publish-port-99400", {"zmq": {"publish": "tcp://127.0.0.1:99400"}}, "zmq.publish",
     "port out of range"),
    ("publish-port-0", {"zmq": {"publish": "tcp://127.0.0.1:0"}}, "zmq.publish",
     "port out of range"),
    ("publish-without-tcp", {"zmq": {"publish": "127.0.0.1:9940"}}, "zmq.publish",
     "e.g. tcp://127.0.0.1:9940"),
    ("publish-bad-host", {"zmq": {"publish": "tcp://bad..host:9940"}}, "zmq.publish",
     "bad host"),
    ("publish-no-port", {"zmq": {"publish": "tcp://127.0.0.1"}}, "zmq.publish",
     "malformed URL"),
    ("publish-udp", {"zmq": {"publish": "udp://127.0.0.1:9940"}}, "zmq.publish",
     "only tcp:// and ipc://"),
    ("replay-without-tcp", {"zmq": {"replay": "localhost:9941"}}, "zmq.replay",
     "unsupported URL"),
    ("state-dir-unwritable", {"state": {"dir": UNWRITABLE}}, "state.dir", "not writable"),
    ("spool-unwritable", {"state": {"spool": UNWRITABLE + "/spool"}}, "state.spool",
     "not writable"),
    ("state-dir-under-a-file", {"state": {"dir": _not_a_dir}}, "state.dir",
     "is not a directory"),
    # a source's table: its type check, the core's poller keys, and its own validate
    ("unknown-source-table", {"debugs": {"enabled": True}}, "debugs",
     "unknown key (valid here:"),
    ("poller-interval-0", {"wannabuild": {"interval": 0}}, "wannabuild.interval",
     "greater than 0"),
    ("poller-bad-crontab", {"debbugs": {"schedule": "every 5 minutes"}}, "debbugs.schedule",
     "not a crontab line"),
    ("wannabuild-bad-timezone", {"wannabuild": {"timezone": "Mars/Olympus"}},
     "wannabuild.timezone", "unknown time zone"),
    ("dak-bad-signatures", {"dak": {"signatures": "maybe"}}, "dak.signatures",
     "must be one of"),
    ("git-bad-service", {"git": {"service": "Git Hub"}}, "git.service", "service"),
    # busgate web's live stream bounds (issue 14): each range names its key
    ("history-stream-stall-0", {"history": {"stream_stall": 0}}, "history.stream_stall",
     "must be 0.05-60, not 0"),
    ("history-stream-keepalive-big", {"history": {"stream_keepalive": 900}},
     "history.stream_keepalive", "must be 1-300, not 900"),
    ("history-stream-resume-0", {"history": {"stream_resume": 0}}, "history.stream_resume",
     "must be 1-100000, not 0"),
    ("history-chart-refresh-1", {"history": {"chart_refresh": 1}}, "history.chart_refresh",
     "must be 5-3600, not 1"),
]


def _config(tmp: Path, override: dict[str, Any]) -> Path:
    values: dict[str, Any] = {
        "state": {"dir": str(tmp / "var")},
        "zmq": {"publish": f"tcp://127.0.0.1:{free_port()}",
                "replay": f"tcp://127.0.0.1:{free_port()}"},
        "dak": {"signatures": "ignore"},
    }
    for section, table in override.items():
        values.setdefault(section, {}).update(
            {k: v(tmp) if callable(v) else v for k, v in table.items()})
    return write_config(tmp / "busgate.toml", values)


@pytest.mark.parametrize(("override", "key", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_config_and_run_refuse_alike(tmp_path, override, key, words) -> None:
    path = _config(tmp_path, override)
    env = {**os.environ, "BUSGATE_CONFIG": str(path)}
    procs = {cmd: subprocess.Popen([*BUSGATE, cmd], env=env, cwd=REPO, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for cmd in ("check-config", "run")}
    for cmd, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == 2, f"{cmd}: {proc.returncode}\n{err}"
        assert f"{path}: {key}: " in err and words in err, f"{cmd}: {err}"
        assert "Traceback" not in err, err
        assert out == ""
    assert not (tmp_path / "var").exists(), "a refused configuration created state"


def test_a_working_configuration_still_passes_and_creates_nothing(tmp_path) -> None:
    path = _config(tmp_path, {"smtp": {"enabled": True, "recipients": ["dak@localhost"]},
                              "debbugs": {"enabled": True,
                                          "url": "http://127.0.0.1:9/soap.cgi"},
                              "zmq": {"publish": "tcp://*:9940"}})
    checked = subprocess.run([*BUSGATE, "check-config", "--config", str(path)], cwd=REPO,
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert 'publish = "tcp://*:9940"' in checked.stdout
    assert not (tmp_path / "var").exists()


def test_a_missing_state_dir_is_judged_by_its_nearest_existing_parent(tmp_path) -> None:
    from gateway import config

    path = _config(tmp_path, {"state": {"dir": str(tmp_path / "a" / "b" / "c")}})
    config.check_writable(config.load(path))  # tmp_path is writable: no error
    assert not (tmp_path / "a").exists()


def test_the_error_names_the_drop_in_that_enabled_the_part(tmp_path) -> None:
    from gateway import config
    from gateway.errors import ConfigError

    main = _config(tmp_path, {})
    (tmp_path / "conf.d").mkdir()
    dropin = tmp_path / "conf.d" / "50-debbugs.toml"
    dropin.write_text("[debbugs]\nenabled = true\n")
    with pytest.raises(ConfigError) as caught:
        config.load(main)
    assert (caught.value.path, caught.value.key) == (str(dropin), "debbugs.url")
