"""Operations: /metrics, /live, /ready of a real daemon while events flow (every counter
of ``busgate status`` is there), JSON log lines, and the systemd unit."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import health, logsetup, metrics
from tests.conftest import BUSGATE, REPO, free_port


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def status(env: dict[str, str]) -> dict:
    out = subprocess.run([*BUSGATE, "status", "--json"], env=env, cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return json.loads(out)


def test_metrics_match_status_while_events_flow(daemon):
    port = free_port()
    proc, settings = daemon(metrics={"enabled": True, "port": port})
    assert get(port, "/live") == (200, "live\n")
    assert get(port, "/ready") == (200, "ready\n")
    assert get(port, "/nothing")[0] == 404
    stop = threading.Event()

    def feed() -> None:
        n = 0
        while not stop.is_set():
            subprocess.run([*BUSGATE, "publish"], input="".join(
                f"flow {n} {i}\n" for i in range(200)), text=True, env=proc.env, cwd=REPO,
                check=True, timeout=30)
            n += 1

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        seen_depths = set()
        for _ in range(3):  # while events flow: scrapes answer, status agrees within bounds
            time.sleep(0.3)
            before = status(proc.env)
            code, text = get(port, "/metrics")
            after = status(proc.env)
            assert code == 200
            got = samples(text)
            assert before["counters"], "nothing counted yet"
            for name, value in after["counters"].items():
                family, labels = metrics.sample_for(name)
                key = (f"{family}_total", tuple(sorted(labels.items())))
                assert key in got, (name, key)
                assert before["counters"].get(name, 0) <= got[key] <= value, name
            last = got[("busgate_last_seq_id", ())]
            assert before["last_seq_id"] <= last <= after["last_seq_id"]
            assert ("busgate_spool_pending", ()) in got
            assert ("busgate_transport_lag", (("transport", "zmq"),)) in got
            seen_depths.add(got[("busgate_outbox_depth", ())])
    finally:
        stop.set()
        feeder.join(30)
    # The named families the operators watch: ingested per kind, published per transport.
    assert [k for k in got if k[0] == "busgate_ingested_total"], sorted(got)
    assert got[("busgate_published_total", (("transport", "zmq"),))] > 0
    # A fault flag makes the daemon unready (not dead) until it clears.
    flag = health.Reporter(settings.state_dir, "spool", logging.getLogger("test"))
    flag.fault("disk full", retry_in=1)
    code, text = get(port, "/ready")
    assert (code, text) == (503, "not ready: spool: disk full\n")
    assert get(port, "/live")[0] == 200
    flag.ok()
    assert get(port, "/ready")[0] == 200


def test_a_taken_metrics_port_is_a_clear_error(make_settings):
    import socket

    from gateway.errors import BusgateError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = make_settings(metrics={"enabled": True, "port": taken.getsockname()[1]})
        with pytest.raises(BusgateError, match=r"cannot serve metrics on 127\.0\.0\.1:"):
            metrics.MetricsServer(settings)


def test_poll_durations_are_a_histogram_per_poller():
    metrics.observe_poll("unit-poller", 0.3)
    metrics.observe_poll("unit-poller", 7.0)
    text = "\n".join(f"{s.name} {s.labels} {s.value}"
                     for f in metrics._poll_registry.collect() for s in f.samples)
    assert "busgate_poll_duration_seconds_count {'poller': 'unit-poller'} 2.0" in text
    assert "busgate_poll_duration_seconds_bucket {'poller': 'unit-poller', 'le': '0.5'} 1.0" \
        in text


def test_every_counter_name_has_one_sample():
    cases = {
        "ingested.mail": ("busgate_ingested", {"kind": "mail"}),
        "published.dropped": ("busgate_dropped", {"transport": "zmq"}),
        "amqp.confirmed": ("busgate_published", {"transport": "amqp"}),
        "poll.wanna-build.failed": ("busgate_polls", {"poller": "wanna-build",
                                                      "outcome": "failed"}),
        "replay.requests": ("busgate_replay", {"what": "requests"}),
        "quarantined.parse": ("busgate_quarantined", {"reason": "parse"}),
        "daemon.started": ("busgate_events", {"name": "daemon.started"}),
        "reprocessed": ("busgate_events", {"name": "reprocessed"}),
    }
    for name, want in cases.items():
        assert metrics.sample_for(name) == want


def test_run_logs_json_lines_and_refuses_a_bad_log_config(make_settings, tmp_path):
    settings = make_settings()
    env = {"BUSGATE_CONFIG": settings.loaded_from[0], "PATH": "/usr/bin:/bin"}
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen([*BUSGATE, "run", "--log-format", "json"], env=env, cwd=REPO,
                               stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 15
            while b"publishing on" not in log.read_bytes() and time.monotonic() < deadline:
                assert run.poll() is None, log.read_text()
                time.sleep(0.05)
        finally:
            run.terminate()
            run.wait(15)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any("publishing on" in entry["message"] and entry["level"] == "INFO"
               and entry["logger"] == "gateway.daemon" for entry in lines)
    assert all(entry["time"].endswith("Z") for entry in lines)
    bad = make_settings(log={"config": str(tmp_path / "missing.json")})
    refused = subprocess.run([*BUSGATE, "run"], env={**env,
                             "BUSGATE_CONFIG": bad.loaded_from[0]}, cwd=REPO, text=True,
                             capture_output=True, timeout=30)
    assert refused.returncode == 2
    assert "log.config" in refused.stderr and "missing.json" in refused.stderr


def test_json_formatter_keeps_one_line_and_cuts_huge_messages():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "a\nb" + "c" * 20000, (),
                               None)
    line = logsetup.JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"].startswith("a\nb") and "[cut: 20003 chars]" in entry["message"]


@pytest.mark.parametrize(("table", "needle"), [
    ({"metrics": {"port": 70000}}, "metrics.port"),
    ({"log": {"format": "xml"}}, "log.format"),
])
def test_check_config_refuses_bad_metrics_and_log_settings(make_settings, table, needle):
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        make_settings(**table)


def test_systemd_unit_is_accepted_by_systemd_analyze(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = (REPO / "contrib/systemd/busgate.service").read_text()
    # verify wants ExecStart's binary to exist: point it at this checkout's busgate.
    binary = shutil.which("busgate", path=str(Path(BUSGATE[0]).parent)) or "/bin/true"
    path = tmp_path / "busgate.service"
    path.write_text(unit.replace("/usr/bin/busgate", binary))
    result = subprocess.run([tool, "verify", "--man=no", str(path)], capture_output=True,
                            text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if str(path) in line or "busgate.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
    assert "ProtectSystem=strict" in unit and "StateDirectory=busgate" in unit
