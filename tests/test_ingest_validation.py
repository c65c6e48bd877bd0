"""Every event is validated against its message type before the outbox (issue 11 item 4).

One decision (gateway.ingest.decide: size, parse, validate) serves the spool worker,
group commit, ``busgate reprocess`` and ``busgate mail --dry-run``: an event its type
refuses sends its whole input to quarantine as ``invalid``, naming the type and the
failing place, and nothing of that input is published.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from gateway import discovery, heartbeat, ingest, messages, runtime
from gateway.attempts import Attempts
from gateway.event import Event
from gateway.spool import Spool
from gateway.subscriber import Subscriber
from tests.conftest import BUSGATE, REPO, adopt
from tests.example_types import TYPES, Accept
from tests.messages_helpers import check_events

INDEX = messages.TypeIndex(TYPES)
WHY = "busgate.test.package.accept.v1: version: 3 is not of type 'string'"


def accept(key: str, version: object = "1.0-1") -> Event:
    return Event("dak", "package", "accept", key=key,
                 body={"source": "hebcal", "version": version, "suite": "sid"})


def log(key: str) -> Event:
    return Event("logger", "message", "log", key=key, body={"log": key})


def item(*events: Event) -> bytes:
    return b"".join(json.dumps(e.to_dict()).encode() + b"\n" for e in events)


@pytest.fixture
def state(make_settings):
    settings = make_settings()
    adopt(settings)
    store = runtime.open_store(settings, index=INDEX)
    yield settings, store, runtime.open_spool(settings)
    store.close()


def test_check_events_splits_valid_from_invalid_naming_type_and_place() -> None:
    events = [accept("a"), accept("b", 3), log("c"),
              Event("logger", "message", "log", key="d", body=[1])]  # type: ignore[arg-type]
    valid, invalid = ingest.check_events(events, INDEX)
    assert [e.key for e in valid] == ["a", "c"]
    assert [(n, e.key, why) for n, e, why in invalid] == [
        (2, "b", WHY),
        (4, "d", "base.message: the body must be a JSON object, not list")]


def test_an_invalid_event_quarantines_its_input_and_stores_nothing(state) -> None:
    settings, store, spool = state
    path = Path(spool.deliver("events", item(accept("ok"), accept("bad", 3))))
    outcome = ingest.ingest_item(store, settings, path)
    assert outcome.quarantined == "invalid"
    assert outcome.error == f"event 2 of 2 (dak.package.accept, key 'bad'): {WHY}"
    assert store.last_seq_id() == 0  # not even the valid event of that input
    (row,) = store.quarantined()
    assert (row["reason"], row["kind"], row["raw"]) == ("invalid", "events",
                                                        item(accept("ok"), accept("bad", 3)))
    assert store.counters()["quarantined.invalid"] == 1


def test_group_commit_quarantines_the_invalid_item_alone(state) -> None:
    settings, store, spool = state
    paths = [Path(spool.deliver("events", item(accept("g1")))),
             Path(spool.deliver("events", item(accept("g2", 3)))),
             Path(spool.deliver("events", item(log("g3"))))]
    names = [p.name for p in paths]
    outcomes: dict[str, ingest.Outcome] = {}
    ingest.ingest_group(store, settings, paths,
                        Attempts(spool.root, 3), lambda p, o: outcomes.__setitem__(p.name, o))
    assert [outcomes[n].quarantined for n in names] == [None, "invalid", None]
    assert [outcomes[n].added for n in names] == [1, 0, 1]
    keys = [r[0] for r in store.connect().execute("SELECT key FROM outbox ORDER BY seq_id")]
    assert keys == ["g1", "g3"]


def test_reprocess_decides_the_same_way(state, make_settings) -> None:
    settings, store, spool = state
    path = Path(spool.deliver("events", item(accept("r", 3))))
    assert ingest.ingest_item(store, settings, path).quarantined == "invalid"
    (row,) = store.quarantined()
    again = ingest.reprocess(store, row, settings=settings)
    assert (again.quarantined, again.error) == ("invalid", store.quarantined()[0]["error"])
    assert WHY in again.error
    # once the type accepts the body (here: no type claims the topic any more), it goes
    relaxed = runtime.open_store(settings, index=messages.TypeIndex(()))
    done = ingest.reprocess(relaxed, store.quarantined()[0], settings=settings)
    assert (done.quarantined, done.added) == (None, 1)
    assert store.quarantined() == [] and store.last_seq_id() == 1
    relaxed.close()


def test_the_decision_is_one_function_for_every_path(monkeypatch, state) -> None:
    """The worker (one item and groups) and reprocess all ask ingest.decide."""
    settings, store, spool = state
    asked: list[str] = []
    real = ingest.decide
    monkeypatch.setattr(ingest, "decide",
                        lambda s, kind, raw, index, **kw: asked.append(kind) or
                        real(s, kind, raw, index, **kw))
    first = Path(spool.deliver("events", item(log("p1"))))
    ingest.ingest_item(store, settings, first)
    group = [Path(spool.deliver("events", item(log(f"p{n}")))) for n in (2, 3)]
    ingest.ingest_group(store, settings, group, Attempts(spool.root, 3), lambda p, o: None)
    bad = Path(spool.deliver("events", item(accept("p4", 3))))
    ingest.ingest_item(store, settings, bad)
    ingest.reprocess(store, store.quarantined()[0], settings=settings)
    assert asked == ["events"] * 5


def test_the_golden_helper_says_what_each_event_means() -> None:
    (meaning,) = check_events([Event("dak", "package", "accept", key="k", body={
        "source": "hebcal", "version": "4.31-1", "suite": "unstable",
        "changed_by": "Barak A. Pearlmutter"}, usernames=("Barak A. Pearlmutter",),
        packages=("hebcal",))], TYPES)
    assert meaning.summary == "hebcal 4.31-1 accepted into unstable (Barak A. Pearlmutter)"
    assert meaning.url == "https://tracker.debian.org/pkg/hebcal"
    assert (meaning.usernames, meaning.packages) == (["Barak A. Pearlmutter"], ["hebcal"])
    assert meaning.name == Accept.name and meaning.topic.endswith("package.accept")
    with pytest.raises(AssertionError, match="version: 3 is not of type"):
        check_events([accept("x", 3)], TYPES)


# -- through the registry: a source package installed for the test -----------------------

SOURCE_MODULE = textwrap.dedent('''
    from dataclasses import dataclass
    from typing import ClassVar

    from gateway import messages
    from gateway.event import Event
    from gateway.sources import MailSpec, Source


    @dataclass(frozen=True)
    class Settings:
        enabled: bool = False


    class Strict(messages.Message):
        """A type with a field none of the test's events has: every one is invalid."""

        name = "busgate.h3test.thing.happen.v1"
        topic_tokens: ClassVar = ("h3test", "thing", "happen")
        body_schema: ClassVar = {"type": "object", "required": ["never"]}


    def claims(message):
        return message.get("X-H3-Test") is not None


    def parse(message, raw, settings):
        return [Event("h3test", "thing", "happen", key="h3:mail", body={"subject":
                      str(message.get("Subject", ""))})]


    SOURCE = Source(name="h3-test", section="h3test", settings=Settings,
                    mail=MailSpec(claims="busgate_h3_testsource:claims",
                                  parse="busgate_h3_testsource:parse", priority=1),
                    messages="busgate_h3_testsource:TYPES")
    TYPES = [Strict]
''')
MAIL = b"From: someone@example.org\nSubject: hello\nX-H3-Test: yes\n\nbody\n"
STRICT_WHY = b"busgate.h3test.thing.happen.v1: (body): 'never' is a required property"


@pytest.fixture
def registered(tmp_path, monkeypatch) -> Path:
    """A distribution registering a source whose type refuses every event, on the
    PYTHONPATH of the processes the test starts."""
    root = tmp_path / "site"
    dist = root / "busgate_h3_testsource-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: busgate-h3-testsource\n"
                                   "Version: 0\n")
    (dist / "entry_points.txt").write_text(
        "[busgate.sources]\nh3-test = busgate_h3_testsource:SOURCE\n")
    (root / "busgate_h3_testsource.py").write_text(SOURCE_MODULE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    return root


def test_mail_dry_run_says_the_daemon_would_quarantine_it_as_invalid(make_settings,
                                                                     registered) -> None:
    settings = make_settings()
    adopt(settings)
    result = subprocess.run([*BUSGATE, "mail", "--dry-run"], input=MAIL, capture_output=True,
                            env={**os.environ, "BUSGATE_CONFIG": str(settings.loaded_from[0])},
                            cwd=REPO, timeout=60)
    assert result.returncode == 65, result.stderr
    assert b"quarantine as invalid" in result.stderr
    assert STRICT_WHY in result.stderr
    assert result.stdout == b""


def test_the_worker_quarantines_an_invalid_input_and_publishes_nothing_of_it(
        daemon, registered) -> None:
    proc, settings = daemon()
    spool = Spool(settings.spool_dir)
    bad = Event("h3test", "thing", "happen", key="w:bad", body={"source": "x"})
    spool.deliver("events", item(log("w:before-bad"), bad))
    spool.deliver("events", item(log("w:marker")))
    with Subscriber(discovery.discover(settings), resume_from=0,
                    heartbeat_topic=heartbeat.topic(settings.topic_prefix)) as sub:
        keys = []
        for message in sub.messages(timeout=20):
            if message.body.get("log", "").startswith("w:"):
                keys.append(message.body["log"])
                if keys[-1] == "w:marker":  # spooled after the bad input: decided by now
                    break
    assert keys == ["w:marker"]
    store = runtime.open_store(settings, index=messages.TypeIndex(()), create=False)
    deadline = time.monotonic() + 10
    while not store.quarantined() and time.monotonic() < deadline:
        time.sleep(0.05)
    (row,) = store.quarantined()
    assert row["reason"] == "invalid"
    assert "event 2 of 2 (h3test.thing.happen, key 'w:bad'): busgate.h3test.thing.happen.v1" \
        in row["error"]
    listed = subprocess.run([*BUSGATE, "reprocess", "--list"], env=proc.env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert "invalid" in listed.stdout
    store.close()


# -- the publishers refuse first what the worker would quarantine -------------------------

def test_the_python_api_refuses_a_body_its_type_refuses(state) -> None:
    from gateway import api

    settings, _store, spool = state
    publisher = api.Publisher(settings)
    publisher._index = INDEX  # the registry's types on this branch: none yet
    with pytest.raises(api.MessageError, match=r"message type: busgate\.test\.package\."
                                               r"accept\.v1: version: 3 is not of type"):
        publisher.publish("package.accept", {"source": "a", "version": 3, "suite": "sid"},
                          modname="dak")
    assert spool.pending() == []
    publisher.publish("package.accept", {"source": "a", "version": "3", "suite": "sid"},
                      modname="dak")
    assert len(spool.pending()) == 1


def test_busgate_publish_refuses_a_body_its_type_refuses(make_settings, registered) -> None:
    settings = make_settings()
    adopt(settings)
    lines = b'{"source": "a"}\n{"never": 1}\n'
    result = subprocess.run([*BUSGATE, "publish", "--modname", "h3test", "--topic",
                             "thing.happen", "--json-input"], input=lines,
                            capture_output=True, cwd=REPO, timeout=60,
                            env={**os.environ, "BUSGATE_CONFIG": str(settings.loaded_from[0])})
    assert result.returncode == 65
    assert b"message 1: msg does not match its message type: " + STRICT_WHY in result.stderr
    assert runtime.open_spool(settings).pending() == []


def test_a_polls_invalid_events_go_to_its_plans_quarantine_and_reprocess_reads_them(
        state) -> None:
    """The hook gateway.polling.apply uses: valid events and the cursor are committed,
    each invalid event is kept as an ``events`` record that reprocess can parse again."""
    from gateway.polling import PollResult, QuarantineItem, StatePlan

    _settings, store, _spool = state
    plan = StatePlan(cursors={"p.cursor": "7"},
                     quarantine=[QuarantineItem("p", b"row", "poison row")])
    result = ingest.screen_poll(PollResult([accept("q1"), accept("q2", 3), log("q3")], plan),
                                store.factory.index)
    assert [e.key for e in result.events] == ["q1", "q3"]
    assert result.plan.cursors == {"p.cursor": "7"} and plan.quarantine[0].raw == b"row"
    _poison, invalid = result.plan.quarantine
    assert (invalid.kind, invalid.reason, invalid.origin) == ("events", "invalid", "q2")
    assert WHY in invalid.error
    assert [e.key for e in ingest.parse_events(invalid.raw)] == ["q2"]
    untouched = PollResult([log("q4")], plan)
    assert ingest.screen_poll(untouched, store.factory.index) is untouched
