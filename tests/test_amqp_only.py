"""Either or both transports: ``[zmq] enabled = false`` runs AMQP only (no ZeroMQ socket
bound, the ZeroMQ cursor holds nothing back), and no transport at all is refused."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid

import pytest
from amqp_helpers import amqp_settings, bind_queue, drain
from conftest import BUSGATE, REPO, write_config

from gateway import discovery


def _listening(address: str) -> bool:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.rabbitmq
def test_amqp_only_daemon_delivers_and_binds_no_zmq_port(daemon, vhost, queues):
    queue = f"only-{uuid.uuid4().hex[:6]}"
    queues.append(queue)
    bind_queue(vhost, queue, "org.debian.dev.myapp.#")
    amqp = amqp_settings(lambda **s: s, vhost)["amqp"]
    proc, settings = daemon(zmq={"enabled": False}, amqp=amqp)
    assert not settings.zmq.enabled
    subprocess.run([*BUSGATE, "publish", "--modname", "myapp", "--topic", "package.accept",
                    "--json-input"], input=json.dumps({"source": "hebcal"}), text=True,
                   env=proc.env, cwd=REPO, check=True, timeout=30)
    ((key, _, body),) = drain(vhost, queue, expect=1, timeout=30)
    assert key == "org.debian.dev.myapp.package.accept" and json.loads(body) == {
        "source": "hebcal"}
    # the configured (free) ZeroMQ ports: nothing listens on them
    assert not _listening(settings.zmq.publish) and not _listening(settings.zmq.replay)
    assert "publishing on amqp://guest@127.0.0.1:5672/" in proc.output()

    def status() -> dict:
        out = subprocess.run([*BUSGATE, "status", "--json"], env=proc.env, cwd=REPO,
                             capture_output=True, text=True, timeout=30, check=True)
        return json.loads(out.stdout)

    deadline = time.monotonic() + 10  # the cursor is written within 0.1 s of the confirm
    while (now := status())["outbox_depth"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(now["transports"]) == {"amqp"}
    assert now["transports"]["amqp"] == {"cursor": 1, "lag": 0}
    # the ZeroMQ cursor (never advanced) does not count as a backlog
    assert (now["published_seq_id"], now["outbox_depth"]) == (1, 0)
    assert proc.stop() == 0


def test_status_counts_the_outbox_from_the_enabled_transports(make_settings):
    from gateway import runtime
    from gateway.event import Event
    from gateway.store import AMQP_CURSOR, PUBLISHED_CURSOR

    store = runtime.open_store(make_settings())
    with store.transaction() as tx:
        tx.add_events([Event(service="dak", object="o", event="e", key=f"k{i}", body={})
                       for i in range(5)])
        tx.set_cursor(PUBLISHED_CURSOR, 2)
        tx.set_cursor(AMQP_CURSOR, 4)
    assert store.status(["amqp"])["outbox_depth"] == 1
    assert store.status(["zmq"])["transports"] == {"zmq": {"cursor": 2, "lag": 3}}
    both = store.status(["zmq", "amqp"])
    assert (both["published_seq_id"], both["outbox_depth"]) == (2, 3)  # the slowest
    assert store.status()["transports"] == both["transports"]  # default: as before


def test_no_transport_at_all_is_refused(tmp_path):
    path = write_config(tmp_path / "b.toml", {"state": {"dir": str(tmp_path / "var")},
                                              "zmq": {"enabled": False}})
    for command in (["check-config"], ["run"]):
        proc = subprocess.run([*BUSGATE, "--config", str(path), *command],
                              capture_output=True, text=True, timeout=30, cwd=REPO)
        assert proc.returncode == 2, (command, proc.stderr)
        assert "zmq.enabled" in proc.stderr and "no transport is enabled" in proc.stderr


def test_tail_does_not_listen_to_its_own_disabled_zmq(make_settings):
    assert [e.name for e in discovery.discover(make_settings())] == ["busgate"]
    assert discovery.discover(make_settings(zmq={"enabled": False},
                                            amqp={"enabled": True})) == []
