"""Shared test helpers: settings in a temp dir, free ports, real-server checks."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway import config

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
BUSGATE = [sys.executable, "-m", "gateway"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_server(name: str, port: int, how: str, host: str = "127.0.0.1") -> None:
    """Skip (locally) or fail (in CI) when a real server the test needs is not there."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc}); {how}"
    if IN_CI:
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


def write_config(path: Path, values: dict[str, Any]) -> Path:
    """Write a TOML config from ``{"key": v, "section": {"key": v}}``."""
    value = config.toml_value
    top = [f"{k} = {value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    tables = []
    for k, v in values.items():
        if isinstance(v, dict):
            tables.append(f"[{k}]\n" + "\n".join(f"{kk} = {value(vv)}" for kk, vv in v.items()))
    path.write_text("\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n")
    return path


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., config.Settings]:
    """Settings with state under tmp_path and free ports; sections override defaults."""

    def factory(**sections: dict[str, Any]) -> config.Settings:
        values: dict[str, Any] = {
            "state": {"dir": str(tmp_path / "var")},
            "zmq": {
                "publish": f"tcp://127.0.0.1:{free_port()}",
                "replay": f"tcp://127.0.0.1:{free_port()}",
                "heartbeat_interval": 0.5,
            },
            # The committed fixture mails are unsigned; tests of dak's signatures
            # (tests/test_dak_signature.py) set dak.signatures and dak.keyring themselves.
            "dak": {"signatures": "ignore"},
        }
        for name, table in sections.items():
            if isinstance(table, dict):
                values.setdefault(name, {}).update(table)
            else:
                values[name] = table
        path = write_config(tmp_path / "busgate.toml", values)
        return config.load(path)

    return factory


def adopt(settings: config.Settings) -> None:
    """What ``busgate run`` does to its state when it starts: create the database and
    the spool and mark both as a daemon's. For tests of the short-lived commands while
    the daemon is down (they refuse an unmarked spool)."""
    from gateway import runtime

    store = runtime.open_store(settings)
    spool = runtime.open_spool(settings)
    spool.ensure()
    runtime.adopt(settings, store, spool)
    store.close()


def mark_spool(root: Path) -> None:
    """Mark a bare spool directory (``busgate mail --spool``) as a daemon's."""
    from gateway import mark
    from gateway.spool import Spool

    Spool(root).ensure()
    mark.write(root, mark.SPOOL_MARK, {"daemon": "test"})


class Daemon:
    """A real ``busgate run`` in a subprocess, for end-to-end tests."""

    def __init__(self, config_path: Path, log_path: Path):
        self.config_path = config_path
        self.log_path = log_path
        self.proc: Any = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "BUSGATE_CONFIG": str(self.config_path)}

    def start(self, wait: float = 15.0, preexec_fn: Callable[[], None] | None = None) -> Daemon:
        import subprocess
        import time

        self.starts = self.log_path.read_bytes().count(b"publishing on") \
            if self.log_path.exists() else 0
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen([*BUSGATE, "run"], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=preexec_fn)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"busgate run exited {self.proc.returncode}:\n{self.output()}")
            if self.log_path.read_bytes().count(b"publishing on") > self.starts:
                return self
            time.sleep(0.02)
        raise RuntimeError(f"busgate run did not start within {wait} s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        import signal

        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.log.close()
        return code

    def kill(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.log.close()


@pytest.fixture
def daemon(tmp_path: Path, make_settings: Callable[..., config.Settings]):
    """Factory: ``daemon(**sections)`` starts ``busgate run`` on settings like make_settings."""
    started: list[Daemon] = []

    def factory(**sections: dict[str, Any]) -> tuple[Daemon, config.Settings]:
        settings = make_settings(**sections)
        proc = Daemon(Path(settings.loaded_from[0]), tmp_path / f"daemon-{len(started)}.log")
        started.append(proc)
        return proc.start(), settings

    yield factory
    for proc in started:
        proc.kill()


# RabbitMQ fixtures (a vhost per run, queues deleted after each test).
from amqp_helpers import queues, test_types, vhost  # noqa: E402, F401

# The history backends: SQLite, and PostgreSQL in throwaway databases.
from history_backends import history_store, pg_databases  # noqa: E402, F401

# A real IRC server (ngircd) and a channel reader, for busgate irc.
from irc_helpers import ngircd, reader  # noqa: E402, F401
