"""The debbugs poller against a local SOAP::Lite-shaped server, over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from test_debbugs_mail import bts_mail

from adapters.debbugs import poller as poller_mod
from adapters.debbugs.poller import DebbugsPoller
from adapters.debbugs.settings import DebbugsSettings
from fixtures.debbugs.soapserver import FakeDebbugs
from gateway import runtime
from gateway.errors import TransientError
from gateway.ingest import ingest
from gateway.store import Store

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 300.0) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeDebbugs]:
    server = FakeDebbugs().start()
    yield server
    server.stop()


@pytest.fixture
def env(fake: FakeDebbugs, make_settings, tmp_path):
    settings = make_settings()
    store = runtime.open_store(settings)
    clock = Clock()

    def make(**cfg) -> DebbugsPoller:
        values = {"url": fake.url, "packages": ["udisks2"], "watch_new": False,
                  "mail_grace": 0.0, "retries": 0, "timeout": 3.0, **cfg}
        backfill = values.pop("backfill", False)
        return DebbugsPoller(DebbugsSettings(**values), backfill=backfill, clock=clock)

    return settings, store, clock, make


def outbox(store: Store) -> list[tuple[str, dict]]:
    return [(r.topic.removeprefix("org.debian.dev."), json.loads(r.envelope)["msg"])
            for r in store.rows_after(0)]


def test_baseline_then_every_event_kind(fake: FakeDebbugs, env) -> None:
    _settings, store, clock, make = env
    fake.put(10, package="udisks2", source="udisks2", subject="panic", date=int(T0) - 86400 * 9)
    fake.put(11, package="udisks2", source="udisks2", subject="typo", date=int(T0) - 86400 * 9)
    fake.put(12, package="udisks2", source="udisks2", done="x@y", date=int(T0) - 86400 * 9)
    fake.put(13, package="udisks2", source="udisks2", date=int(T0) - 86400 * 9)
    fake.put(99, package="other")
    poller = make()
    assert poller.poll(store) == []  # baseline: silent
    assert set(store.snapshots("debbugs")) == {"10", "11", "12", "13"}

    clock.tick()
    fake.put(14, package="udisks2", subject="new one", date=int(clock.now) - 10)
    fake.change(10, severity="serious", tags="patch upstream", owner="Me <me@x>",
                forwarded="https://bugs.example/1", mergedwith="13", blocks="11",
                found_versions=["udisks2/2.7.4-1", "udisks2/2.7.5-1"])
    fake.change(11, done="Closer <c@example.org>", fixed_versions=["udisks2/2.8-1"])
    fake.change(12, done="")  # reopened
    fake.change(13, archived=1, location="archive")
    events = poller.poll(store)
    kinds = {(e.body["bug"], e.event) for e in events}
    assert kinds == {(10, "update"), (11, "close"), (12, "reopen"), (13, "archive"), (14, "new")}
    update = next(e for e in events if e.event == "update")
    assert update.body["changes"] == {
        "severity": ["normal", "serious"], "tags": [[], ["patch", "upstream"]],
        "owner": ["", "Me <me@x>"], "forwarded": ["", "https://bugs.example/1"],
        "mergedwith": [[], [13]], "blocks": [[], [11]],
        "found_versions": [["samba/2:4.5.12+dfsg-2"], ["udisks2/2.7.4-1", "udisks2/2.7.5-1"]],
    }
    close = next(e for e in events if e.event == "close")
    assert close.body["changes"]["done"] == ["", "Closer <c@example.org>"]
    assert close.body["changes"]["fixed_versions"] == [[], ["udisks2/2.8-1"]]
    new = next(e for e in events if e.event == "new")
    for field in ("bug", "package", "source", "title", "severity", "tags", "submitter",
                  "owner", "link"):
        assert field in new.body
    assert new.body["link"] == "https://bugs.debian.org/14" and new.body["tags"] == []
    assert [t for t, _ in outbox(store)] == [f"debbugs.bug.{e.event}" for e in events]

    # nothing changed: nothing emitted, nothing rewritten; the archived bug is not asked again
    clock.tick()
    fake.calls.clear()
    assert poller.poll(store) == []
    asked = [n for m, n in fake.calls if m == "get_status"]
    assert asked == [4]  # 10, 11, 12, 14 (13 is archived and left get_bugs)


def test_first_poll_without_baseline_and_backfill(fake: FakeDebbugs, env) -> None:
    _settings, store, _clock, make = env
    fake.put(10, package="udisks2")
    fake.put(11, package="udisks2")
    assert {e.event for e in make(baseline=False).poll(store, dry_run=True)} == {"new"}
    assert len(make(backfill=True).poll(store)) == 2
    # a later backfill reports nothing twice: the new events already exist
    assert make(backfill=True).poll(store) == []
    assert len(outbox(store)) == 2


def test_old_bug_entering_the_watch_list_is_recorded_silently(fake: FakeDebbugs, env) -> None:
    _settings, store, clock, make = env
    fake.put(10, package="udisks2")
    make().poll(store)
    clock.tick()
    fake.put(20, package="samba", date=int(T0) - 10 * 86400)  # old bug, other package
    fake.put(21, package="samba", date=int(clock.now) - 5)  # filed since the last poll
    events = make(packages=["udisks2", "samba"]).poll(store)
    assert [(e.body["bug"], e.event) for e in events] == [(21, "new")]
    assert "20" in store.snapshots("debbugs")


def test_cost_grows_with_watched_bugs_not_per_bug(fake: FakeDebbugs, env) -> None:
    _settings, store, clock, make = env
    for bug in range(1, 1201):
        fake.put(bug, package="udisks2")
    poller = make()
    poller.poll(store)
    assert poller.last_calls == 4  # get_bugs + 3 x get_status (500, 500, 200)
    assert max(n for m, n in fake.calls if m == "get_status") <= 500
    clock.tick()
    for bug in range(1, 1201, 100):
        fake.change(bug, severity="minor")
    events = poller.poll(store)
    assert len(events) == 12 and poller.last_calls == 4
    assert store.counters()["debbugs.soap_calls"] == 8


def test_dry_run_stores_nothing(fake: FakeDebbugs, env) -> None:
    _settings, store, _clock, make = env
    fake.put(10, package="udisks2")
    events = make(baseline=False).poll(store, dry_run=True)
    assert [e.event for e in events] == ["new"]
    assert store.snapshots("debbugs") == {} and store.rows_after(0) == []
    assert store.cursor(poller_mod.CURSOR_LAST_POLL) is None


@pytest.mark.parametrize(("method", "mode"), [
    ("get_status", "truncated"), ("get_status", "broken"), ("get_status", "fault"),
    ("get_status", "drop"), ("get_bugs", "http500"), ("get_status", "slow"),
])
def test_server_dying_mid_poll_commits_nothing(fake: FakeDebbugs, env, method: str,
                                               mode: str) -> None:
    _settings, store, clock, make = env
    for bug in range(1, 1001):
        fake.put(bug, package="udisks2")
    poller = make(timeout=0.5)
    poller.poll(store)
    before = (store.snapshots("debbugs"), store.last_seq_id(),
              store.cursor(poller_mod.CURSOR_LAST_POLL))
    clock.tick()
    for bug in (5, 995):  # one change in each get_status batch
        fake.change(bug, severity="grave")
    fake.failures[method] = (mode, 1.5 if mode == "slow" else "Internal error")
    fake.fail_after = len(fake.calls) + (2 if method == "get_status" else 0)  # 2nd batch dies
    with pytest.raises(TransientError, match=method):
        poller.poll(store)
    after = (store.snapshots("debbugs"), store.last_seq_id(),
             store.cursor(poller_mod.CURSOR_LAST_POLL))
    assert after == before  # nothing from the half-read poll
    fake.failures.clear()
    events = poller.poll(store)
    assert sorted(e.body["bug"] for e in events) == [5, 995]
    assert poller.poll(store) == []


def test_crash_inside_commit_then_restart(fake: FakeDebbugs, env, monkeypatch) -> None:
    settings, store, clock, make = env
    fake.put(10, package="udisks2")
    make().poll(store)
    clock.tick()
    fake.change(10, done="c@x")

    from gateway.store import Transaction

    original = Transaction.set_cursor

    def crash(self, name, value):  # dies after events and snapshots were written
        raise OSError("power cut")

    monkeypatch.setattr(Transaction, "set_cursor", crash)
    with pytest.raises(OSError):
        make().poll(store)
    monkeypatch.setattr(Transaction, "set_cursor", original)
    assert store.rows_after(0) == []  # rolled back as a whole

    restarted = runtime.open_store(settings)  # a new process on the same state
    [event] = make().poll(restarted)
    assert event.event == "close"
    # restart between poll and publish: the event waits in the outbox, exactly once
    again = runtime.open_store(settings)
    assert make().poll(again) == []
    assert [t for t, _ in outbox(again)] == ["debbugs.bug.close"]
    assert again.published_seq_id() == 0 and again.last_seq_id() == 1


def test_close_mail_then_poll_reports_one_close(fake: FakeDebbugs, env) -> None:
    settings, store, clock, make = env
    fake.put(881352, package="udisks2")
    poller = make()
    poller.poll(store)
    assert ingest(store, settings, "mail", bts_mail("closed 881352"), "m1").added == 1
    clock.tick()
    fake.change(881352, done="Jane Maintainer <jane@debian.org>")
    assert poller.poll(store) == []
    assert [t for t, _ in outbox(store)] == ["debbugs.bug.close"]
    assert outbox(store)[0][1]["via"] == "mail"
    # the marker is used up: a second close after a reopen is reported again
    clock.tick()
    fake.change(881352, done="")
    clock.tick()
    poller.poll(store)
    fake.change(881352, done="Other <o@x>")
    assert [e.event for e in poller.poll(store)] == ["close"]
    assert store.snapshot(poller_mod.MAIL_NAMESPACE, "881352") is None


def test_report_and_forward_mail_cover_new_and_forwarded(fake: FakeDebbugs, env) -> None:
    settings, store, clock, make = env
    fake.put(10, package="udisks2")
    poller = make()
    poller.poll(store)
    clock.tick()
    ingest(store, settings, "mail", bts_mail("report 881352", msgid="<r@x>"), "m1")
    ingest(store, settings, "mail", bts_mail("forwarded 10", msgid="<f@x>",
                                             subject="Bug#10: x"), "m2")
    fake.put(881352, package="udisks2", date=int(clock.now) - 30)
    fake.change(10, forwarded="https://upstream/1", severity="important")
    events = poller.poll(store)
    assert [(e.body["bug"], e.event) for e in events] == [(10, "update")]
    assert events[0].body["changes"] == {"severity": ["normal", "important"]}
    topics = [t for t, _ in outbox(store)]
    assert topics == ["debbugs.bug.report", "debbugs.bug.forward", "debbugs.bug.update"]


def test_fresh_change_waits_one_poll_for_its_mail(fake: FakeDebbugs, env) -> None:
    settings, store, clock, make = env
    fake.put(10, package="udisks2", last_modified=int(T0))
    fake.put(11, package="udisks2", last_modified=int(T0))
    poller = make(mail_grace=120.0)
    poller.poll(store)
    clock.tick(30)
    fake.change(10, done="c@x", last_modified=int(clock.now) - 5)
    fake.change(11, done="c@x", last_modified=int(clock.now) - 5)
    assert poller.poll(store) == []  # both fresh: held back for the mail
    ingest(store, settings, "mail", bts_mail("closed 10", subject="Bug#10: t"), "m")
    clock.tick(30)
    events = poller.poll(store)
    assert [(e.body["bug"], e.event) for e in events] == [(11, "close")]  # 10 came by mail
    assert sorted(t for t, _ in outbox(store)) == ["debbugs.bug.close"] * 2
    clock.tick(30)
    assert poller.poll(store) == []


def test_bugs_leaving_the_watch_list_are_kept_then_dropped(fake: FakeDebbugs, env) -> None:
    _settings, store, clock, make = env
    fake.put(10, package="udisks2")
    poller = make(keep_days=2.0)
    poller.poll(store)
    clock.tick(3600)
    fake.change(10, package="udisks2-common")  # reassigned away
    [event] = poller.poll(store)
    assert event.body["changes"]["package"] == ["udisks2", "udisks2-common"]
    clock.tick(86400)
    fake.change(10, severity="minor")
    assert [e.event for e in poller.poll(store)] == ["update"]  # still followed
    clock.tick(2 * 86400)
    fake.calls.clear()
    assert poller.poll(store) == []
    assert store.snapshots("debbugs") == {}
    assert "get_status" not in fake.methods()


def test_newest_bugs_and_the_numbers_since_the_last_poll(fake: FakeDebbugs, env) -> None:
    _settings, store, clock, make = env
    for bug in range(100, 110):
        fake.put(bug, package="anything")
    poller = make(packages=[], watch_new=True, newest_count=3)
    assert poller.poll(store) == []
    assert store.cursor(poller_mod.CURSOR_MAX_BUG) == "109"
    clock.tick()
    for bug in range(110, 120):  # more than newest_count arrive between polls
        fake.put(bug, package="anything", date=int(clock.now) - 60)
    events = poller.poll(store)
    assert sorted(e.body["bug"] for e in events) == list(range(110, 120))
    assert {e.event for e in events} == {"new"}


def test_event_bodies_match_their_schemas(fake: FakeDebbugs, env) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from pathlib import Path

    from adapters.mail import parse_mail

    schemas = Path(__file__).resolve().parent.parent / "docs" / "schemas"
    _settings, store, clock, make = env
    fake.put(10, package="udisks2", subject="ü")
    fake.put(11, package="udisks2", done="x@y")
    fake.put(12, package="udisks2")
    poller = make(backfill=True)
    events = poller.poll(store)
    clock.tick()
    fake.change(10, done="c@x")
    fake.change(11, done="")
    fake.change(12, archived=1, tags="wontfix")
    fake.put(13, package="udisks2")
    fake.change(13, severity="wishlist")
    events += poller.poll(store)
    clock.tick()
    fake.change(13, owner="o@x")
    events += poller.poll(store)
    for kind in ("report", "followup", "closed", "forwarded", "submitter-changed"):
        events += parse_mail(bts_mail(f"{kind} 10"))
    seen = set()
    for event in events:
        schema = json.loads((schemas / f"debbugs.bug.{event.event}.json").read_text())
        jsonschema.validate(json.loads(json.dumps(event.body)), schema)
        seen.add(event.event)
    assert seen == {"new", "update", "close", "reopen", "archive", "report", "followup",
                    "forward", "submitter-change"}
