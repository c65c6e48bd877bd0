"""The debbugs poller against a local SOAP::Lite-shaped server, over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_debbugs_mail import bts_mail

from adapters.debbugs import poller as poller_mod
from adapters.debbugs.poller import DebbugsPoller
from adapters.debbugs.settings import DebbugsSettings
from fixtures.debbugs.soapserver import FakeDebbugs
from gateway import runtime
from gateway.errors import TransientError
from gateway.event import Event
from gateway.ingest import ingest
from gateway.polling import StoreView, apply
from gateway.store import Store

T0 = 1_700_000_000.0
V1_STATE = Path(__file__).resolve().parent.parent / "fixtures" / "state" / "v1.sqlite"


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


def poll(poller: DebbugsPoller, store: Store, *, dry_run: bool = False) -> list[Event]:
    """One poll as the daemon runs it: the poller reads, the core commits its result."""
    result = poller.poll(StoreView(store))
    if not dry_run:
        apply(store, result)
    return result.events


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
    assert poll(poller, store) == []  # baseline: silent
    assert set(store.snapshots("debbugs")) == {"10", "11", "12", "13"}

    clock.tick()
    fake.put(14, package="udisks2", subject="new one", date=int(clock.now) - 10)
    fake.change(10, severity="serious", tags="patch upstream", owner="Me <me@x>",
                forwarded="https://bugs.example/1", mergedwith="13", blocks="11",
                found_versions=["udisks2/2.7.4-1", "udisks2/2.7.5-1"])
    fake.change(11, done="Closer <c@example.org>", fixed_versions=["udisks2/2.8-1"])
    fake.change(12, done="")  # reopened
    fake.change(13, archived=1, location="archive")
    events = poll(poller, store)
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
    assert poll(poller, store) == []
    asked = [n for m, n in fake.calls if m == "get_status"]
    assert asked == [4]  # 10, 11, 12, 14 (13 is archived and left get_bugs)


def test_first_poll_without_baseline_and_backfill(fake: FakeDebbugs, env) -> None:
    _settings, store, _clock, make = env
    fake.put(10, package="udisks2")
    fake.put(11, package="udisks2")
    assert {e.event for e in poll(make(baseline=False), store, dry_run=True)} == {"new"}
    assert len(poll(make(backfill=True), store)) == 2
    # a later backfill reports nothing twice: the new events already exist
    assert poll(make(backfill=True), store) == []
    assert len(outbox(store)) == 2


def test_old_bug_entering_the_watch_list_is_recorded_silently(fake: FakeDebbugs, env) -> None:
    _settings, store, clock, make = env
    fake.put(10, package="udisks2")
    poll(make(), store)
    clock.tick()
    fake.put(20, package="samba", date=int(T0) - 10 * 86400)  # old bug, other package
    fake.put(21, package="samba", date=int(clock.now) - 5)  # filed since the last poll
    events = poll(make(packages=["udisks2", "samba"]), store)
    assert [(e.body["bug"], e.event) for e in events] == [(21, "new")]
    assert "20" in store.snapshots("debbugs")


def test_cost_grows_with_watched_bugs_not_per_bug(fake: FakeDebbugs, env) -> None:
    _settings, store, clock, make = env
    for bug in range(1, 1201):
        fake.put(bug, package="udisks2")
    poller = make()
    poll(poller, store)
    assert poller.last_calls == 4  # get_bugs + 3 x get_status (500, 500, 200)
    assert max(n for m, n in fake.calls if m == "get_status") <= 500
    clock.tick()
    for bug in range(1, 1201, 100):
        fake.change(bug, severity="minor")
    events = poll(poller, store)
    assert len(events) == 12 and poller.last_calls == 4
    assert store.counters()["debbugs.soap_calls"] == 8


def test_dry_run_stores_nothing(fake: FakeDebbugs, env) -> None:
    _settings, store, _clock, make = env
    fake.put(10, package="udisks2")
    events = poll(make(baseline=False), store, dry_run=True)
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
    # a timeout the healthy calls meet on a loaded machine, a stall well past it
    poller = make(timeout=2.0)
    poll(poller, store)
    before = (store.snapshots("debbugs"), store.last_seq_id(),
              store.cursor(poller_mod.CURSOR_LAST_POLL))
    clock.tick()
    for bug in (5, 995):  # one change in each get_status batch
        fake.change(bug, severity="grave")
    fake.failures[method] = (mode, 5.0 if mode == "slow" else "Internal error")
    fake.fail_after = len(fake.calls) + (2 if method == "get_status" else 0)  # 2nd batch dies
    with pytest.raises(TransientError, match=method):
        poll(poller, store)
    after = (store.snapshots("debbugs"), store.last_seq_id(),
             store.cursor(poller_mod.CURSOR_LAST_POLL))
    assert after == before  # nothing from the half-read poll
    fake.failures.clear()
    events = poll(poller, store)
    assert sorted(e.body["bug"] for e in events) == [5, 995]
    assert poll(poller, store) == []


def test_crash_inside_commit_then_restart(fake: FakeDebbugs, env, monkeypatch) -> None:
    settings, store, clock, make = env
    fake.put(10, package="udisks2")
    poll(make(), store)
    clock.tick()
    fake.change(10, done="c@x")

    from gateway.store import Transaction

    original = Transaction.set_cursor

    def crash(self, name, value):  # dies after events and snapshots were written
        raise OSError("power cut")

    monkeypatch.setattr(Transaction, "set_cursor", crash)
    with pytest.raises(OSError):
        poll(make(), store)
    monkeypatch.setattr(Transaction, "set_cursor", original)
    assert store.rows_after(0) == []  # rolled back as a whole

    restarted = runtime.open_store(settings)  # a new process on the same state
    [event] = poll(make(), restarted)
    assert event.event == "close"
    # restart between poll and publish: the event waits in the outbox, exactly once
    again = runtime.open_store(settings)
    assert poll(make(), again) == []
    assert [t for t, _ in outbox(again)] == ["debbugs.bug.close"]
    assert again.published_seq_id() == 0 and again.last_seq_id() == 1


def test_close_mail_then_poll_reports_one_close(fake: FakeDebbugs, env) -> None:
    settings, store, clock, make = env
    fake.put(881352, package="udisks2")
    poller = make()
    poll(poller, store)
    assert ingest(store, settings, "mail", bts_mail("closed 881352"), "m1").added == 1
    clock.tick()
    fake.change(881352, done="Jane Maintainer <jane@debian.org>")
    assert poll(poller, store) == []
    assert [t for t, _ in outbox(store)] == ["debbugs.bug.close"]
    assert outbox(store)[0][1]["via"] == "mail"
    # the marker is used up: a second close after a reopen is reported again
    clock.tick()
    fake.change(881352, done="")
    clock.tick()
    poll(poller, store)
    fake.change(881352, done="Other <o@x>")
    assert [e.event for e in poll(poller, store)] == ["close"]
    assert store.snapshot(poller_mod.MAIL_NAMESPACE, "881352") is None


def test_report_and_forward_mail_cover_new_and_forwarded(fake: FakeDebbugs, env) -> None:
    settings, store, clock, make = env
    fake.put(10, package="udisks2")
    poller = make()
    poll(poller, store)
    clock.tick()
    ingest(store, settings, "mail", bts_mail("report 881352", msgid="<r@x>"), "m1")
    ingest(store, settings, "mail", bts_mail("forwarded 10", msgid="<f@x>",
                                             subject="Bug#10: x"), "m2")
    fake.put(881352, package="udisks2", date=int(clock.now) - 30)
    fake.change(10, forwarded="https://upstream/1", severity="important")
    events = poll(poller, store)
    assert [(e.body["bug"], e.event) for e in events] == [(10, "update")]
    assert events[0].body["changes"] == {"severity": ["normal", "important"]}
    topics = [t for t, _ in outbox(store)]
    assert topics == ["debbugs.bug.report", "debbugs.bug.forward", "debbugs.bug.update"]


def test_fresh_change_waits_one_poll_for_its_mail(fake: FakeDebbugs, env) -> None:
    settings, store, clock, make = env
    fake.put(10, package="udisks2", last_modified=int(T0))
    fake.put(11, package="udisks2", last_modified=int(T0))
    poller = make(mail_grace=120.0)
    poll(poller, store)
    clock.tick(30)
    fake.change(10, done="c@x", last_modified=int(clock.now) - 5)
    fake.change(11, done="c@x", last_modified=int(clock.now) - 5)
    assert poll(poller, store) == []  # both fresh: held back for the mail
    ingest(store, settings, "mail", bts_mail("closed 10", subject="Bug#10: t"), "m")
    clock.tick(30)
    events = poll(poller, store)
    assert [(e.body["bug"], e.event) for e in events] == [(11, "close")]  # 10 came by mail
    assert sorted(t for t, _ in outbox(store)) == ["debbugs.bug.close"] * 2
    clock.tick(30)
    assert poll(poller, store) == []


def test_bugs_leaving_the_watch_list_are_kept_then_dropped(fake: FakeDebbugs, env) -> None:
    _settings, store, clock, make = env
    fake.put(10, package="udisks2")
    poller = make(keep_days=2.0)
    poll(poller, store)
    clock.tick(3600)
    fake.change(10, package="udisks2-common")  # reassigned away
    [event] = poll(poller, store)
    assert event.body["changes"]["package"] == ["udisks2", "udisks2-common"]
    clock.tick(86400)
    fake.change(10, severity="minor")
    assert [e.event for e in poll(poller, store)] == ["update"]  # still followed
    clock.tick(2 * 86400)
    fake.calls.clear()
    assert poll(poller, store) == []
    assert store.snapshots("debbugs") == {}
    assert "get_status" not in fake.methods()


def test_newest_bugs_and_the_numbers_since_the_last_poll(fake: FakeDebbugs, env) -> None:
    _settings, store, clock, make = env
    for bug in range(100, 110):
        fake.put(bug, package="anything")
    poller = make(packages=[], watch_new=True, newest_count=3)
    assert poll(poller, store) == []
    assert store.cursor(poller_mod.CURSOR_MAX_BUG) == "109"
    clock.tick()
    for bug in range(110, 120):  # more than newest_count arrive between polls
        fake.put(bug, package="anything", date=int(clock.now) - 60)
    events = poll(poller, store)
    assert sorted(e.body["bug"] for e in events) == list(range(110, 120))
    assert {e.event for e in events} == {"new"}


def test_event_bodies_match_their_types(fake: FakeDebbugs, env) -> None:
    from messages_helpers import check_events

    from adapters.debbugs.messages import TYPES
    from adapters.mail import parse_mail

    _settings, store, clock, make = env
    fake.put(10, package="udisks2", subject="ü")
    fake.put(11, package="udisks2", done="x@y")
    fake.put(12, package="udisks2")
    poller = make(backfill=True)
    events = poll(poller, store)
    clock.tick()
    fake.change(10, done="c@x")
    fake.change(11, done="")
    fake.change(12, archived=1, tags="wontfix")
    fake.put(13, package="udisks2")
    fake.change(13, severity="wishlist")
    events += poll(poller, store)
    clock.tick()
    fake.change(13, owner="o@x")
    events += poll(poller, store)
    for kind in ("report", "followup", "closed", "forwarded", "submitter-changed"):
        events += parse_mail(bts_mail(f"{kind} 10"))
    check_events(events, TYPES)
    seen = {event.event for event in events}
    assert seen == {"new", "update", "close", "reopen", "archive", "report", "followup",
                    "forward", "submitter-change"}


# -- mail and SOAP through source_facts ------------------------------------------------------
FACTS = poller_mod.FACT_NAMESPACE


def test_mail_then_soap_reports_the_change_once_through_a_fact(fake: FakeDebbugs, env) -> None:
    settings, store, clock, make = env
    fake.put(881352, package="udisks2")
    fake.put(10, package="udisks2")
    poller = make()
    poll(poller, store)
    ingest(store, settings, "mail", bts_mail("closed 881352"), "m1")
    ingest(store, settings, "mail", bts_mail("followup 10", msgid="<fu@x>",
                                             subject="Bug#10: x"), "m2")
    assert set(store.facts(FACTS)) == {"881352"}  # a followup covers no poller change
    assert set(store.facts(FACTS)["881352"]) == {"close"}
    clock.tick()
    fake.change(881352, done="Jane Maintainer <jane@debian.org>")
    fake.change(10, done="Other <o@x>")
    assert [(e.body["bug"], e.event) for e in poll(poller, store)] == [(10, "close")]
    assert store.facts(FACTS) == {}  # consumed by the poll that used it
    assert [t for t, _ in outbox(store)] == ["debbugs.bug.close", "debbugs.bug.followup",
                                             "debbugs.bug.close"]


def test_soap_then_mail_reports_the_change_once(fake: FakeDebbugs, env) -> None:
    settings, store, clock, make = env
    fake.put(10, package="udisks2", last_modified=int(T0))
    poller = make(mail_grace=120.0)
    poll(poller, store)
    clock.tick(30)
    fake.change(10, done="c@x", last_modified=int(clock.now) - 5)
    assert poll(poller, store) == []  # SOAP saw it first: held back one poll for the mail
    assert json.loads(store.snapshot(poller_mod.MAIL_NAMESPACE, "10"))["deferred"] == clock.now
    ingest(store, settings, "mail", bts_mail("closed 10", subject="Bug#10: t"), "m")
    clock.tick(30)
    assert poll(poller, store) == []
    assert store.facts(FACTS) == {} and store.snapshot(poller_mod.MAIL_NAMESPACE, "10") is None
    assert [(t, m["via"]) for t, m in outbox(store)] == [("debbugs.bug.close", "mail")]


def test_redelivered_mail_adds_no_fact(fake: FakeDebbugs, env) -> None:
    settings, store, clock, make = env
    fake.put(881352, package="udisks2")
    poller = make()
    poll(poller, store)
    assert ingest(store, settings, "mail", bts_mail("closed 881352"), "m1").added == 1
    clock.tick()
    fake.change(881352, done="Jane <jane@debian.org>")
    assert poll(poller, store) == []
    assert ingest(store, settings, "mail", bts_mail("closed 881352"), "m1-again").added == 0
    assert store.facts(FACTS) == {}, "a duplicate mail must not record its fact again"
    clock.tick()
    fake.change(881352, done="")  # reopened, then closed again without mail
    poll(poller, store)
    clock.tick()
    fake.change(881352, done="Other <o@x>")
    assert [e.event for e in poll(poller, store)] == ["close"]  # not hidden by a stale fact


def test_unused_facts_expire(fake: FakeDebbugs, env) -> None:
    settings, store, clock, make = env
    fake.put(10, package="udisks2")
    poller = make()
    poll(poller, store)
    ingest(store, settings, "mail", bts_mail("closed 999"), "m")  # a bug nobody watches
    assert set(store.facts(FACTS)) == {"999"}
    clock.now = time.time() + poller_mod.MAIL_MARKER_TTL + 60
    poll(poller, store)
    assert store.facts(FACTS) == {}


def test_old_state_markers_and_mail_cursor_are_honoured_once(fake: FakeDebbugs, make_settings,
                                                              tmp_path) -> None:
    """A state written before source_facts (fixtures/state/v1.sqlite): its close marker
    for 881352 and the report mail after its ``debbugs.mail_seq`` cursor still cover the
    poller's close and new; the cursor is then retired."""
    import shutil

    settings = make_settings()
    settings.db_path.parent.mkdir(parents=True)
    shutil.copy(V1_STATE, settings.db_path)
    store = runtime.open_store(settings)
    fake.put(881352, package="udisks2", source="udisks2", date=1699000000,
             done="Jane <jane@debian.org>")
    fake.put(881400, package="udisks2", date=1700000100)
    clock = Clock()
    clock.now = 1700000350.0
    poller = DebbugsPoller(DebbugsSettings(url=fake.url, packages=["udisks2"],
                                           watch_new=False, mail_grace=0.0, retries=0),
                           clock=clock)
    assert poll(poller, store) == []
    assert store.cursor(poller_mod.CURSOR_MAIL_SEQ) is None
    assert store.snapshot(poller_mod.MAIL_NAMESPACE, "881352") is None  # used up
    assert store.snapshot(poller_mod.MAIL_NAMESPACE, "881400") is None
    assert json.loads(store.snapshot(poller_mod.MAIL_NAMESPACE, "10")) == {
        "deferred": 1700000050.0}
    assert store.last_seq_id() == 2 and set(store.snapshots("debbugs")) == {"881352", "881400"}


def test_cli_dry_run_writes_nothing(fake: FakeDebbugs, tmp_path) -> None:
    import subprocess

    from conftest import BUSGATE, REPO, adopt, write_config

    from gateway import config

    fake.put(10, package="udisks2")
    conf = write_config(tmp_path / "busgate.toml", {
        "state": {"dir": str(tmp_path / "var")},
        "debbugs": {"url": fake.url, "packages": ["udisks2"], "watch_new": False,
                    "mail_grace": 0.0, "retries": 0},
    })
    settings = config.load(conf)
    adopt(settings)

    def busgate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BUSGATE, "poll", "--config", str(conf), "debbugs", "--once",
                               *args], capture_output=True, text=True, timeout=60, cwd=REPO)

    assert busgate().returncode == 0  # baseline
    fake.change(10, done="c@x")

    def files() -> tuple[bytes, bytes]:
        """The database and its write-ahead log, absent = empty (``-shm`` is the WAL
        index, where even a reader marks what it reads; the last connection to close
        removes an empty log)."""
        wal = settings.db_path.with_name(f"{settings.db_path.name}-wal")
        return settings.db_path.read_bytes(), wal.read_bytes() if wal.exists() else b""

    counters = runtime.open_store(settings).counters()
    before = files()
    dry = busgate("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [json.loads(line)["topic"] for line in dry.stdout.splitlines()] == [
        "org.debian.dev.debbugs.bug.close"]
    assert files() == before  # not a byte written
    assert runtime.open_store(settings).counters() == counters
    real = busgate()
    assert real.returncode == 0 and "1 new events" in real.stdout, real.stderr
    assert [t for t, _ in outbox(runtime.open_store(settings))] == ["debbugs.bug.close"]
