"""A stock fedmsg (PyPI 1.1.7) consumer receives busgate's messages unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import BUSGATE, IN_CI, REPO

CONSUMER = textwrap.dedent("""
    import json, sys
    import fedmsg.core
    endpoint, count = sys.argv[1], int(sys.argv[2])
    ctx = fedmsg.core.FedMsgContext(
        name=None, active=False, mute=True, topic_prefix="org.debian", environment="dev",
        endpoints={"busgate": [endpoint]}, high_water_mark=0, io_threads=1,
        post_init_sleep=0, zmq_linger=0, timeout=2, zmq_enabled=True,
        zmq_tcp_keepalive=1, zmq_reconnect_ivl=100, zmq_reconnect_ivl_max=1000,
        validate_signatures=False,
    )
    print("ready", flush=True)
    seen = 0
    for name, ep, topic, msg in ctx.tail_messages(topic="org.debian.dev.uploads"):
        print(json.dumps({"name": name, "topic": topic, "msg": msg}), flush=True)
        seen += 1
        if seen >= count:
            break
""")


def _fedmsg_available() -> None:
    probe = subprocess.run([sys.executable, "-c", "import fedmsg.core"], capture_output=True,
                           text=True)
    if probe.returncode:
        message = ("stock fedmsg 1.1.7 cannot be imported on this Python "
                   f"({probe.stderr.strip().splitlines()[-1]}); install it with "
                   "`pip install fedmsg==1.1.7` (the test extra does)")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def test_stock_fedmsg_tail_messages_sees_the_same_message(daemon, tmp_path):
    _fedmsg_available()
    proc, settings = daemon()
    consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, settings.zmq.publish, "3"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout.readline().strip() == "ready"
        # The consumer joins asynchronously; keep publishing numbered uploads until
        # it has seen three (no sleeps), then compare them with the outbox.
        received = []
        for n in range(200):
            subprocess.run([*BUSGATE, "publish", "--modname", "uploads", "--topic",
                            "package.accept", "--json-input"],
                           input=json.dumps({"source": "hebcal", "n": n, "note": "é"}),
                           text=True, env=proc.env, cwd=REPO, check=True)
            try:
                consumer.wait(0.05)
                break
            except subprocess.TimeoutExpired:
                continue
        out, err = consumer.communicate(timeout=20)
        received = [json.loads(line) for line in out.splitlines()]
    finally:
        consumer.kill()
    assert len(received) == 3, err
    from gateway import runtime

    store = runtime.open_store(settings)
    for item in received:
        msg = item["msg"]
        assert item["name"] == "busgate"
        assert item["topic"] == msg["topic"] == "org.debian.dev.uploads.package.accept"
        (stored,) = store.envelopes("msg_id = ?", [msg["msg_id"]], 2)
        stored = json.loads(stored)
        for key in ("topic", "msg", "msg_id", "timestamp", "seq_id", "i", "username",
                    "headers"):
            assert msg[key] == stored[key], key
        assert msg["msg"]["note"] == "é"
        assert isinstance(msg["timestamp"], int)
