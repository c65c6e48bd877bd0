"""Issue 11 item 7: publishing from Python (gateway.api / busgate.publish) through a real daemon."""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import busgate
import gateway
from gateway import api, discovery, envelope, heartbeat, ingest, runtime
from gateway.errors import BusgateError, SpoolError, TopicError
from gateway.subscriber import Subscriber
from tests.conftest import REPO, adopt


def subscriber(settings) -> Subscriber:
    return Subscriber(discovery.discover(settings),
                      heartbeat_topic=heartbeat.topic(settings.topic_prefix), since=time.time())


def outbox(settings) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True)) as db:
        return db.execute("SELECT key, msg_id FROM outbox ORDER BY seq_id").fetchall()


def nested(depth: int) -> dict:
    body: dict = {}
    for _ in range(depth - 1):
        body = {"a": body}
    return body


def test_published_events_arrive_once_with_topic_body_and_msg_id(daemon):
    proc, settings = daemon(ingest={"max_json_depth": 8})
    prefix = settings.topic_prefix
    publisher = busgate.Publisher(settings, modname="myapp")
    with subscriber(settings) as sub:
        sent = {
            publisher.publish("thing.create", {"n": 1}): ("myapp.thing.create", {"n": 1}),
            busgate.publish(topic="package.upload.accept", modname="dak", msg={"x": "é"},
                            config=settings, usernames=["ana"], packages=["hebcal"]):
                ("dak.package.upload.accept", {"x": "é"}),
            publisher.publish(f"{prefix}.other.thing.update", {"full": True}):
                ("other.thing.update", {"full": True}),
            publisher.publish("deep.ok", nested(8)): ("myapp.deep.ok", nested(8)),
        }
        retried = publisher.publish("thing.retry", {"r": 1}, key="order-42")
        assert publisher.publish("thing.retry", {"r": 1}, key="order-42") == retried
        sent[retried] = ("myapp.thing.retry", {"r": 1})
        with publisher.batch() as batch:
            for i in range(3):
                sent[batch.publish("batch.item", {"i": i})] = ("myapp.batch.item", {"i": i})
        sent.update({mid: ("myapp.many.item", {"j": j}) for j, mid in enumerate(
            publisher.publish_many({"topic": "many.item", "msg": {"j": j}} for j in range(2)))})
        got = list(sub.messages(count=len(sent), timeout=20))
        assert not list(sub.messages(count=1, timeout=0.5))  # the retry added nothing
    assert {m.envelope["msg_id"]: (m.topic, m.body) for m in got} == {
        mid: (f"{prefix}.{topic}", body) for mid, (topic, body) in sent.items()}
    assert len(got) == len(sent) == 10
    stored = dict(outbox(settings))
    assert stored["python:myapp:order-42"] == retried
    assert set(stored.values()) == set(sent)
    assert proc.stop() == 0
    assert "quarantine" not in proc.output().lower()


def test_threads_publishing_concurrently_lose_nothing(daemon):
    proc, settings = daemon()
    publisher = api.Publisher(settings, modname="load")
    ids: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        mine = [publisher.publish("thread.ping", {"thread": n, "i": i}) for i in range(40)]
        with lock:
            ids.extend(mine)

    with subscriber(settings) as sub:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        got = list(sub.messages(count=240, timeout=30))
    assert len(ids) == len(set(ids)) == 240
    assert sorted(m.envelope["msg_id"] for m in got) == sorted(ids)
    assert {(m.body["thread"], m.body["i"]) for m in got} == {
        (n, i) for n in range(6) for i in range(40)}
    assert proc.stop() == 0


@pytest.fixture
def marked(make_settings):
    settings = make_settings(ingest={"max_json_depth": 8, "max_item_bytes": 4096})
    adopt(settings)
    return settings


BAD = [
    (TopicError, "lowercase", dict(topic="Thing.Create", msg={})),
    (TopicError, "after the modname", dict(topic="create", msg={})),
    (TopicError, "after the modname", dict(topic="a.b.c.d", msg={})),
    (TopicError, "more than 255", dict(topic="thing." + "x" * 250, msg={})),
    (TopicError, "prefix", dict(topic="org.fedora.prod.app.thing.create", msg={})),
    (TopicError, "not modname",
     dict(topic="org.debian.dev.other.thing.create", modname="app", msg={})),
    (TopicError, "heartbeat", dict(topic="publisher.heartbeat", modname="busgate", msg={})),
    (api.MessageError, "JSON object", dict(topic="a.b", msg=[1, 2])),
    (api.MessageError, "not JSON", dict(topic="a.b", msg={"x": float("nan")})),
    (api.MessageError, "not JSON", dict(topic="a.b", msg={"x": float("inf")})),
    (api.MessageError, "not JSON", dict(topic="a.b", msg={"x": object()})),
    (api.MessageError, "max_json_depth", dict(topic="a.b", msg=nested(9))),
    (api.MessageError, "max_json_depth", dict(topic="a.b", msg=nested(100000))),
    (api.MessageError, "max_item_bytes", dict(topic="a.b", msg={"x": "y" * 5000})),
    (api.MessageError, "key", dict(topic="a.b", msg={}, key="")),
    (api.MessageError, "key", dict(topic="a.b", msg={}, key="k" * 1025)),
    (api.MessageError, "usernames", dict(topic="a.b", msg={}, usernames="ana")),
    (api.MessageError, "packages", dict(topic="a.b", msg={}, packages=[1])),
]


@pytest.mark.parametrize(("error", "words", "kwargs"), BAD)
def test_bad_input_raises_and_stores_nothing(marked, error, words, kwargs) -> None:
    publisher = api.Publisher(marked, modname="app")
    with pytest.raises(error, match=words) as caught:
        publisher.publish(**kwargs)
    assert isinstance(caught.value, BusgateError)
    with pytest.raises(error):
        publisher.publish_many([{"topic": "ok.fine", "msg": {}}, kwargs])
    assert runtime.open_spool(marked).pending() == []


def test_batches_are_all_or_nothing_and_bounded(marked) -> None:
    publisher = api.Publisher(marked, modname="app")
    spool = runtime.open_spool(marked)
    with pytest.raises(ZeroDivisionError), publisher.batch() as batch:
        batch.publish("a.b", {})
        raise ZeroDivisionError
    with pytest.raises(api.MessageError, match="max_item_bytes"):
        publisher.publish_many({"topic": "a.b", "msg": {"x": "y" * 1000}} for _ in range(5))
    with pytest.raises(api.MessageError, match="unknown argument"):
        publisher.publish_many([{"topic": "a.b", "msg": {}, "colour": 1}])
    assert spool.pending() == []
    big = api.Publisher(marked, modname="app")
    big._max_item = 10 ** 9
    with pytest.raises(api.MessageError, match=f"at most {api.MAX_BATCH_EVENTS}"):
        big.publish_many({"topic": "a.b", "msg": {}} for _ in range(api.MAX_BATCH_EVENTS + 1))
    assert spool.pending() == []
    # one batch is one transaction of the worker
    assert inspect.signature(ingest.ingest).parameters["batch"].default >= api.MAX_BATCH_EVENTS
    ids = publisher.publish_many([{"topic": "a.b", "msg": {"i": i}} for i in range(3)])
    assert len(spool.pending()) == 1 and len(set(ids)) == 3


def test_unmarked_spool_is_refused(make_settings) -> None:
    settings = make_settings()
    with pytest.raises(api.UnmarkedSpoolError, match="not the spool of a busgate daemon") as err:
        gateway.publish("thing.create", {"x": 1}, "app", config=settings)
    assert isinstance(err.value, SpoolError)
    assert not settings.spool_dir.exists()


def test_publish_reads_the_configuration_once_per_path(make_settings, monkeypatch) -> None:
    settings = make_settings()
    adopt(settings)
    path = settings.loaded_from[0]
    monkeypatch.setattr(api, "_publishers", {})
    loads = []
    real = api._config.load
    monkeypatch.setattr(api._config, "load", lambda p=None: loads.append(p) or real(p))
    for i in range(3):
        busgate.publish(topic="thing.create", modname="app", msg={"i": i}, config=path)
    assert loads == [path]
    assert len(runtime.open_spool(settings).pending()) == 3


def test_a_fresh_process_publishes_without_a_socket_while_the_daemon_is_down(make_settings):
    """No socket, no sleep: the call imports no ZeroMQ, creates no socket (the socket module
    may be imported: reading the registry's package metadata imports email.utils, which
    imports it) and returns once the item is on disk."""
    settings = make_settings()
    adopt(settings)
    code = textwrap.dedent("""
        import os, sys, busgate

        def sockets():
            links = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    links.append(os.readlink(f"/proc/self/fd/{fd}"))
                except OSError:
                    pass
            return any(link.startswith("socket:") for link in links)

        print(busgate.publish(topic="thing.create", modname="app", msg={"x": 1}))
        opened = sockets()
        import socket
        with socket.socket():
            assert sockets()  # the probe sees a socket when there is one
        print("zmq" in sys.modules, opened)
    """)
    env = {**os.environ, "BUSGATE_CONFIG": settings.loaded_from[0]}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    msg_id, modules = result.stdout.splitlines()
    assert modules == "False False"
    (item,) = runtime.open_spool(settings).pending()
    (event,) = ingest.parse_events(item.read_bytes(), settings)
    assert envelope.msg_id_for(event.key, event.time) == msg_id
    assert event.topic(settings.topic_prefix) == "org.debian.dev.app.thing.create"


def test_the_readme_example_runs(make_settings, monkeypatch) -> None:
    settings = make_settings()
    adopt(settings)
    monkeypatch.setenv("BUSGATE_CONFIG", settings.loaded_from[0])
    readme = (REPO / "README.md").read_text()
    code = re.search(r"## Publishing from Python.*?```python\n(.*?)```", readme, re.S)
    assert code
    scope: dict = {}
    exec(code.group(1), scope)  # noqa: S102 - our own README
    assert len(scope["ids"]) == 3
    assert len(runtime.open_spool(settings).pending()) == 5
