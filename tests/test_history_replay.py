"""Stock ``fedora-messaging replay`` against ``busgate web``: the message it fetches from
``/v2/id`` is republished to RabbitMQ with the same id, headers and body — with the
history on SQLite and on PostgreSQL (``history_store``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import history_fixture as fx
from tests.amqp_helpers import bind_queue, drain, url
from tests.conftest import REPO
from tests.history_backends import database_of


def start_web(db: str, tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    config = tmp_path / "busgate.toml"
    config.write_text(f'[state]\ndir = "{tmp_path / "var"}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "web", "--config", str(config),
                             "--database", db, "--port", "0"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        pytest.fail(f"busgate web did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    return proc, line.rsplit(" ", 1)[1].strip()


def test_fedora_messaging_replay_republishes_with_same_id_and_headers(vhost, queues, tmp_path,
                                                                     history_store):
    pytest.importorskip("fedora_messaging")
    store = fx.fill(history_store())
    database = database_of(store)
    store.close()
    queue = f"busgate-history-replay-{history_store.backend}"
    queues.append(queue)
    bind_queue(vhost, queue, "#")
    web, base = start_web(database, tmp_path)
    try:
        conf = tmp_path / "fm.toml"
        conf.write_text(f'amqp_url = "{url(vhost)}"\n[client_properties]\napp = "busgate test"\n')
        env = {**os.environ, "FEDORA_MESSAGING_CONF": str(conf)}
        started = time.monotonic()
        done = subprocess.run([str(Path(sys.executable).parent / "fedora-messaging"), "replay",
                               fx.msg_id(3), "--datagrepper-url", base], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        got = drain(vhost, queue, expect=1, timeout=20)
    finally:
        web.terminate()
        web.wait(10)
    assert time.monotonic() - started < 30
    assert len(got) == 1
    routing_key, props, body = got[0]
    original = fx.envelope(*fx.MESSAGES[2])
    assert routing_key == original["topic"]
    assert props.message_id == fx.msg_id(3)
    import json

    assert json.loads(body) == original["msg"]
    for key, value in original["headers"].items():
        assert props.headers[key] == value, key
