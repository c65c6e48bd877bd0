"""The wanna-build poller against a real PostgreSQL (127.0.0.1:5432, user postgres).

A template database with fixtures/wannabuild/schema.sql is created once per session,
each test gets its own clone, and all are dropped at the end. Rows are written the
way bin/wanna-build writes them (fixtures/wannabuild/wbdb.py): packages row and
``transactions`` row in one transaction, stamped ``now()``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
import threading
import time
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from messages_helpers import check_events

from adapters.wannabuild import query
from adapters.wannabuild.messages import TYPES
from adapters.wannabuild.poller import CURSOR, WannaBuildPoller, from_settings
from fixtures.wannabuild import wbdb
from gateway import config, pollers, runtime
from gateway.errors import TransientError
from gateway.event import Event
from gateway.polling import StoreView, apply
from gateway.store import Store
from tests.conftest import BUSGATE, REPO, adopt, free_port, require_server

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

BUILDD = "buildd_amd64-conova-01"


@pytest.fixture(scope="session")
def template() -> Iterator[str]:
    require_server("PostgreSQL", wbdb.PORT,
                   "start it with: pg_ctlcluster --skip-systemctl-redirect 15 main start")
    name = wbdb.unique_name("busgate_wbtpl")
    wbdb.create(name)
    yield name
    wbdb.drop(name)


@dataclass
class WB:
    """One test's scratch wanna-build database, its writer, settings and store."""

    name: str
    dsn: str
    writer: wbdb.Writer
    make_settings: Callable[..., config.Settings]
    settings: config.Settings = field(init=False)
    store: Store = field(init=False)
    pollers: list[WannaBuildPoller] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.settings = self.make_settings(wannabuild={"dsn": self.dsn})
        adopt(self.settings)  # `busgate poll --once` writes only into a daemon's state
        self.store = runtime.open_store(self.settings)

    def poller(self, **cfg: Any) -> WannaBuildPoller:
        settings = self.make_settings(wannabuild={"dsn": self.dsn, **cfg})
        poller = from_settings(settings)
        self.pollers.append(poller)
        return poller

    def change(self, *args: Any, **kwargs: Any) -> None:
        self.writer.change(*args, **kwargs)

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.writer.execute(statement, params)

    def outbox(self) -> list[dict[str, Any]]:
        rows = self.store.rows_after(0, limit=100000)
        return [json.loads(r.envelope) for r in rows]

    def keys(self) -> list[str]:
        return [r[0] for r in self.store.connect().execute("SELECT key FROM outbox")]


def poll(poller: WannaBuildPoller, store: Store, *, dry_run: bool = False) -> list[Event]:
    """One poll as the daemon runs it: the poller reads, the core commits its result."""
    result = poller.poll(StoreView(store))
    if not dry_run:
        apply(store, result)
    return result.events


@pytest.fixture
def wb(template: str, make_settings: Callable[..., config.Settings]) -> Iterator[WB]:
    name = wbdb.unique_name()
    dsn = wbdb.create(name, template=template)
    writer = wbdb.Writer(dsn)
    state = WB(name, dsn, writer, make_settings)
    yield state
    for poller in state.pollers:
        poller.close()
    writer.close()
    wbdb.drop(name)


def only(events: list[Event]) -> Event:
    assert len(events) == 1, [(e.event, dict(e.body)) for e in events]
    check_events(events[:1], TYPES)
    return events[0]


def check(events: list[Event]) -> list[Event]:
    check_events(events, TYPES)
    return events


# -- every state transition of the research notes ------------------------------------------
# (arch, package, dist, new state, action, user, packages fields) -> expected event token
TRANSITIONS: list[tuple[str, str, str, str, str, str, dict[str, Any], str]] = [
    ("amd64", "hello", "sid", "Needs-Build", "--merge-v3: needs-build", "wbadm",
     {"version": "2.10-3", "notes": "uncompiled"}, "needs-build"),
    ("amd64", "hello", "sid", "BD-Uninstallable", "--merge-all (dose)", "wbadm",
     {"bd_problem": "libfoo-dev is not installable"}, "bd-uninstallable"),
    ("amd64", "hello", "sid", "Needs-Build", "--merge-all (dose)", "wbadm", {}, "needs-build"),
    ("amd64", "hello", "sid", "Building", "--take", BUILDD, {"builder": BUILDD}, "building"),
    ("amd64", "hello", "sid", "Build-Attempted", "--set-attempted", BUILDD,
     {"failed": "dpkg-buildpackage: error: debian/rules build subprocess returned exit status 2"},
     "build-attempted"),
    ("amd64", "hello", "sid", "Built", "--set-built", BUILDD, {}, "built"),
    ("amd64", "hello", "sid", "Uploaded", "--set-uploaded", BUILDD, {}, "uploaded"),
    ("amd64", "hello", "sid", "Installed", "--merge-v3: Installed", "wbadm",
     {"installed_version": "2.10-3"}, "installed"),
    # binNMU: Installed -> BD-Uninstallable (+b1, out-of-date) -> Needs-Build -> ... -> cancel
    ("amd64", "hello", "sid", "BD-Uninstallable", "--binNMU", "jdoe",
     {"binary_nmu_version": 1, "binary_nmu_changelog": "Rebuild against libfoo2",
      "notes": "out-of-date"}, "bd-uninstallable"),
    ("amd64", "hello", "sid", "Needs-Build", "--merge-all (dose)", "wbadm", {}, "needs-build"),
    ("amd64", "hello", "sid", "Installed", "--binNMU", "jdoe",
     {"binary_nmu_version": None, "notes": "installed"}, "installed"),
    # failure, new version, dep-wait, give-back, no-build (twice), auto-not-for-us
    ("amd64", "hello", "sid", "Needs-Build", "--merge-v3: needs-build", "wbadm",
     {"version": "2.10-4", "notes": "out-of-date"}, "needs-build"),
    ("amd64", "hello", "sid", "Building", "--take", BUILDD, {"builder": BUILDD}, "building"),
    ("amd64", "hello", "sid", "Failed", "--set-failed", BUILDD,
     {"failed": "test suite failed: 3 of 120 tests"}, "failed"),
    ("amd64", "hello", "sid", "Needs-Build", "--merge-v3: needs-build", "wbadm",
     {"version": "2.10-5"}, "needs-build"),
    ("amd64", "hello", "sid", "Building", "--take", BUILDD, {"builder": BUILDD}, "building"),
    ("amd64", "hello", "sid", "Dep-Wait", "--dep-wait", BUILDD,
     {"depends": "libfoo-dev (>= 2.0)"}, "dep-wait"),
    ("amd64", "hello", "sid", "Needs-Build", "--merge-all (dose)", "wbadm", {"depends": None},
     "needs-build"),
    ("amd64", "hello", "sid", "Building", "--take", BUILDD, {"builder": BUILDD}, "building"),
    ("amd64", "hello", "sid", "BD-Uninstallable", "--give-back", BUILDD, {"builder": None},
     "bd-uninstallable"),
    ("amd64", "hello", "sid", "Not-For-Us", "--no-build", "jdoe", {}, "not-for-us"),
    ("amd64", "hello", "sid", "Failed", "--no-build", "jdoe",
     {"failed": "Was Not-For-Us previously"}, "failed"),
    ("amd64", "hello", "sid", "Auto-Not-For-Us", "--merge-v3: Auto-Not-For-Us", "wbadm",
     {"notes": "packages-arch-specific"}, "auto-not-for-us"),
    # what older wanna-build logged for sources that left the archive
    ("i386", "oldie", "trixie", "Failed", "--set-failed", "buildd_i386-x86-01",
     {"version": "1.0-1", "failed": "ld: cannot find -lbar"}, "failed"),
    ("i386", "oldie", "trixie", "Failed-Removed", "--merge-v3: removed", "wbadm", {},
     "failed-removed"),
    ("arm64", "waiter", "sid", "Dep-Wait", "--dep-wait", "buildd_arm64-arm-01",
     {"version": "3.1-2", "depends": "rustc (>= 1.80)"}, "dep-wait"),
    ("arm64", "waiter", "sid", "Dep-Wait-Removed", "--merge-v3: removed", "wbadm", {},
     "dep-wait-removed"),
]


def test_every_state_transition_becomes_one_event(wb: WB) -> None:
    poller = wb.poller()
    assert poll(poller, wb.store) == []  # first run: starts at the (empty) newest row
    previous: dict[tuple[str, str, str], str] = {}
    for arch, pkg, dist, state, action, user, fields, token in TRANSITIONS:
        version = fields.pop("version", None) if "version" in fields else None
        wb.change(arch, pkg, dist, state, action=action, user=user, version=version, **fields)
        if version:
            fields["version"] = version
        event = only(poll(poller, wb.store))
        body = event.body
        assert event.topic(wb.settings.topic_prefix) == \
            f"org.debian.dev.wanna-build.build.{token}"
        assert (body["architecture"], body["package"], body["distribution"]) == (arch, pkg, dist)
        assert body["state"] == state and body["action"] == action and body["user"] == user
        assert body["previous_state"] == previous.get((arch, pkg, dist))
        assert body["package_row"] == "current"
        if "builder" in fields:
            assert body["builder"] == fields["builder"]
        if fields.get("failed"):
            assert body["failed"] == fields["failed"]
        if "depends" in fields:
            assert body["depends"] == fields["depends"]
        if "notes" in fields:
            assert body["notes"] == fields["notes"]
        assert pkg in event.packages and user in event.usernames
        previous[(arch, pkg, dist)] = state
    # deletions: wanna-build logs state "deleted" in transactions, then deletes the row
    wb.writer.delete("amd64", "hello", "sid", action="--merge-v3: deleted")
    event = only(poll(poller, wb.store))
    assert event.event == "deleted"
    assert event.body["previous_state"] == "Auto-Not-For-Us"
    assert event.body["package_row"] == "gone" and event.body["builder"] is None
    assert event.body["version"] == "2.10-5"
    wb.writer.delete("arm64", "waiter", "sid", action="--forget", user="jdoe")
    forgotten = only(poll(poller, wb.store))
    assert (forgotten.event, forgotten.body["action"]) == ("deleted", "--forget")
    assert wb.sql("SELECT count(*) FROM packages WHERE package IN ('hello', 'waiter')") == [(0,)]
    # the outbox holds every transaction row once, in order, and no more
    assert poll(poller, wb.store) == []
    assert len(wb.outbox()) == len(TRANSITIONS) + 2
    assert [m["seq_id"] for m in wb.outbox()] == list(range(1, len(TRANSITIONS) + 3))


def test_binnmu_fields(wb: WB) -> None:
    poller = wb.poller()
    poll(poller, wb.store)
    wb.change("amd64", "libx", "sid", "Installed", action="--merge-v3: Installed",
              user="wbadm", version="4.2-1")
    wb.change("amd64", "libx", "sid", "BD-Uninstallable", action="--binNMU", user="jdoe",
              binary_nmu_version=3, binary_nmu_changelog="Rebuild for the libfoo transition",
              notes="out-of-date")
    installed, nmu = check(poll(poller, wb.store))
    assert installed.body["package_row"] == "changed"  # the row already moved on
    assert installed.body["binary_nmu_version"] is None
    assert (nmu.event, nmu.body["action"], nmu.body["binary_nmu_version"]) == \
        ("bd-uninstallable", "--binNMU", 3)
    assert (nmu.body["version"], nmu.body["notes"]) == ("4.2-1", "out-of-date")
    wb.change("amd64", "libx", "sid", "Needs-Build", action="--merge-all (dose)", user="wbadm")
    ready = only(poll(poller, wb.store))
    assert ready.body["binary_nmu_version"] == 3 and ready.event == "needs-build"


# -- the cursor: late commits, baseline, backlog, backfill ----------------------------------
def test_row_committed_after_a_later_row_is_published_once(wb: WB) -> None:
    poller = wb.poller()
    poll(poller, wb.store)
    with wb.writer.transaction() as slow:
        # the slow transaction's row is stamped now(), i.e. before the fast one's
        wb.change("amd64", "slow", "sid", "Building", action="--take", user=BUILDD,
                  version="1-1", conn=slow)
        time.sleep(0.01)
        wb.change("amd64", "fast", "sid", "Building", action="--take", user=BUILDD,
                  version="1-1")
        fast = only(poll(poller, wb.store))
        assert fast.body["package"] == "fast"
        assert poll(poller, wb.store) == []
    late = only(poll(poller, wb.store))  # committed now, stamped before "fast"
    assert late.body["package"] == "slow"
    assert late.time < fast.time
    assert poller.last_late == 1
    assert poll(poller, wb.store) == [] and poll(poller, wb.store) == []
    assert sorted(wb.keys()) == sorted([fast.key, late.key])
    assert wb.store.counters()["wanna-build.late_rows"] == 1


def test_late_row_seen_by_another_poller_sharing_the_store(wb: WB) -> None:
    one, two = wb.poller(), wb.poller()
    poll(one, wb.store)
    pending(wb, 2)
    assert len(poll(one, wb.store)) == 2
    with wb.writer.transaction() as slow:
        wb.change("amd64", "slow", "sid", "Built", action="--set-built", user="b", version="1",
                  conn=slow)
        time.sleep(0.01)
        pending(wb, 1)
        assert len(poll(two, wb.store)) == 1  # moved the cursor: one's memory is stale
        assert poll(one, wb.store) == []
    assert [e.body["package"] for e in poll(one, wb.store)] == ["slow"]
    assert poll(two, wb.store) == [] and poll(one, wb.store) == []
    assert len(wb.outbox()) == 4


def test_late_rows_among_a_backlog_read_in_small_batches(wb: WB) -> None:
    poller = wb.poller(batch_rows=3)
    poll(poller, wb.store)
    published: list[Event] = []
    with wb.writer.transaction() as slow:
        wb.change("i386", "late", "sid", "Built", action="--set-built", user="b", version="1",
                  conn=slow)
        for i in range(10):
            wb.change("i386", f"p{i}", "sid", "Needs-Build", action="--merge-v3: needs-build",
                      user="wbadm", version="1")
        # rows sharing one timestamp (one transaction) are never split across batches
        with wb.writer.transaction() as same:
            for i in range(5):
                wb.change("i386", f"q{i}", "sid", "Needs-Build", action="--merge-v3: needs-build",
                          user="wbadm", version="1", conn=same)
        for _ in range(10):
            published += poll(poller, wb.store)
    for _ in range(3):
        published += poll(poller, wb.store)
    names = [e.body["package"] for e in check(published)]
    assert sorted(names) == sorted(["late", *(f"p{i}" for i in range(10)),
                                    *(f"q{i}" for i in range(5))])
    assert names[-1] == "late"
    assert len(wb.outbox()) == 16


def test_first_run_starts_at_the_newest_row(wb: WB) -> None:
    for i in range(3):
        wb.change("amd64", f"old{i}", "sid", "Needs-Build", action="--merge-v3: needs-build",
                  user="wbadm", version="1")
    poller = wb.poller()
    with wb.writer.transaction() as inflight:
        wb.change("amd64", "inflight", "sid", "Building", action="--take", user=BUILDD,
                  version="1", conn=inflight)
        assert poll(poller, wb.store) == []  # baseline: nothing published
        assert wb.store.cursor(CURSOR) is not None
    # the old rows, re-read in the overlap window, stay unpublished; the row that was
    # still being written during the first run is published
    (event,) = poll(poller, wb.store)
    assert event.body["package"] == "inflight"
    wb.change("amd64", "new", "sid", "Needs-Build", action="--merge-v3: needs-build",
              user="wbadm", version="1")
    assert [e.body["package"] for e in poll(poller, wb.store)] == ["new"]
    assert len(wb.outbox()) == 2


def test_since_backfills_and_rewinds_never_double(wb: WB) -> None:
    for i in range(3):
        wb.change("amd64", f"old{i}", "sid", "Needs-Build", action="--merge-v3: needs-build",
                  user="wbadm", version="1")
    wb.sql("UPDATE transactions SET time = time - interval '2 days' WHERE package = 'old0'")
    since = (wb.sql("SELECT min(time) FROM transactions WHERE package <> 'old0'")[0][0])
    poller = wb.poller(since=since.isoformat())
    assert sorted(e.body["package"] for e in poll(poller, wb.store)) == ["old1", "old2"]
    assert poll(poller, wb.store) == []
    # --since on a later run re-reads from there: only what is missing gets published
    week_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
    rewind = from_settings(wb.settings, since=week_ago)
    wb.pollers.append(rewind)
    assert [e.body["package"] for e in poll(rewind, wb.store)] == ["old0"]
    assert poll(rewind, wb.store) == []
    assert len(wb.outbox()) == 3


def test_transaction_open_ten_poll_intervals_is_published_once(wb: WB) -> None:
    """Issue 10 #3: a transaction kept open far longer than overlap_seconds while other
    commits are polled loses nothing: one that wrote at once, and one (like a merge run)
    that reads for a long time and writes only at the end, so it has no xid meanwhile."""
    interval = 0.2
    poller = wb.poller(overlap_seconds=interval / 2)
    poll(poller, wb.store)
    others: list[str] = []
    with wb.writer.transaction() as early, wb.writer.transaction() as merge:
        merge.execute("SELECT now()")  # the run starts: its rows will be stamped now
        wb.change("amd64", "early", "sid", "Building", action="--take", user=BUILDD,
                  version="1", conn=early)
        started = time.monotonic()
        polls = 0
        while polls < 10 or time.monotonic() - started < 10 * interval:
            name = f"other{polls}"
            wb.change("amd64", name, "sid", "Needs-Build", action="--merge-v3: needs-build",
                      user="wbadm", version="1")
            others.append(name)
            assert [e.body["package"] for e in poll(poller, wb.store)] == [name]
            polls += 1
            time.sleep(interval)
        held = time.monotonic() - started
        assert held >= 10 * interval and held > 10 * poller.cfg.overlap_seconds
        wb.change("amd64", "merged", "sid", "Needs-Build", action="--merge-v3: needs-build",
                  user="wbadm", version="1", conn=merge)
        assert poll(poller, wb.store) == []  # still uncommitted
    late = poll(poller, wb.store)
    assert sorted(e.body["package"] for e in late) == ["early", "merged"]
    stamped = dict(wb.sql("SELECT package, time FROM transactions WHERE package IN "
                          "('early', 'merged', 'other0')"))
    assert stamped["merged"] < stamped["other0"] and stamped["early"] < stamped["other0"]
    assert poller.last_late == 2
    for _ in range(3):
        assert poll(poller, wb.store) == []
    keys = wb.keys()
    assert len(keys) == len(set(keys)) == len(others) + 2


def test_rows_of_one_run_are_published_in_the_order_written(wb: WB) -> None:
    """Issue 10 #2: one transaction (one timestamp) writes Needs-Build then
    BD-Uninstallable, and --take then --set-built; alphabetical order of the actions is
    the reverse. Each package's last event must be its state in the database."""
    poller = wb.poller()
    poll(poller, wb.store)
    with wb.writer.transaction() as run:
        wb.change("amd64", "newpkg", "sid", "Needs-Build", action="--merge-v3: needs-build",
                  user="wbadm", version="1.0-1", conn=run)
        wb.change("amd64", "newpkg", "sid", "BD-Uninstallable", action="--merge-all (dose)",
                  user="wbadm", bd_problem="libfoo-dev is not installable", conn=run)
        wb.change("arm64", "quick", "sid", "Needs-Build", action="--merge-v3: needs-build",
                  user="wbadm", version="2-1", conn=run)
        wb.change("arm64", "quick", "sid", "Building", action="--take", user=BUILDD, conn=run)
        wb.change("arm64", "quick", "sid", "Built", action="--set-built", user=BUILDD, conn=run)
    assert len({t for (t,) in wb.sql("SELECT time FROM transactions")}) == 1  # one stamp
    events = check(poll(poller, wb.store))
    by_package: dict[str, list[str]] = {}
    for event in events:
        by_package.setdefault(event.body["package"], []).append(event.body["state"])
    assert by_package == {"newpkg": ["Needs-Build", "BD-Uninstallable"],
                          "quick": ["Needs-Build", "Building", "Built"]}
    final = dict(wb.sql("SELECT package, state FROM packages"))
    published = [m["msg"] for m in wb.outbox()]  # in seq_id order
    last = {m["package"]: m["state"] for m in published}
    assert last == final


def test_poison_rows_are_quarantined_once_and_never_block_later_rows(wb: WB, tmp_path) -> None:
    """Issue 9 #8: a row stamped 'infinity' made every poll exit 75 and stopped all later
    rows. Rows whose time Python cannot hold (±infinity, NULL, year 20000) are now
    quarantined once with the reason, counted, and the rows around them published."""
    poller = wb.poller()
    poll(poller, wb.store)
    wb.change("amd64", "before", "sid", "Building", action="--take", user=BUILDD, version="1")
    insert = ("INSERT INTO transactions (architecture, package, distribution, version, action,"
              " prevstate, state, real_user, set_user, time) VALUES ('amd64', %s, 'sid', '1',"
              " '--take', 'Needs-Build', 'Building', 'b', 'b', {})")
    for package, stamp in (("inf", "'infinity'"), ("neginf", "'-infinity'"),
                           ("null", "NULL"), ("far", "'20000-01-01'")):
        wb.sql(insert.format(stamp), (package,))
    wb.sql(insert.format("now()"), ("x" * 5_000_000,))  # absurd: cut in the database
    wb.change("amd64", "after", "sid", "Built", action="--set-built", user=BUILDD,
              version="1")
    events = check(poll(poller, wb.store))
    assert [e.body["package"][:5] for e in events] == ["befor", "xxxxx", "after"]
    assert events[1].body["truncated"] == ["package"]
    assert len(events[1].body["package"]) == 1000
    assert poller.last_poison == 4
    quarantined = wb.store.quarantined()
    assert len(quarantined) == 4
    assert {json.loads(q["raw"])["time"] for q in quarantined} == {
        "infinity", "-infinity", None, "20000-01-01 00:00:00"}
    assert all(q["reason"] == "poison" and "not a time" in q["error"] for q in quarantined)
    assert wb.store.counters()["wanna-build.poison_rows"] == 4
    # quarantined once: later polls go on and publish what comes after
    wb.sql(insert.format("'infinity'"), ("inf2",))
    wb.change("amd64", "later", "sid", "Built", action="--set-built", user=BUILDD, version="1")
    assert [e.body["package"] for e in poll(poller, wb.store)] == ["later"]
    assert poll(poller, wb.store) == []
    assert len(wb.store.quarantined()) == 5
    assert wb.store.counters()["wanna-build.poison_rows"] == 5
    # the command line polls on too (it exited 75 on every run)
    wb.change("amd64", "cli", "sid", "Built", action="--set-built", user=BUILDD, version="1")
    done = subprocess.run([*BUSGATE, "poll", "wanna-build", "--once",
                           "--config", wb.settings.loaded_from[0]],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "1 new events" in done.stdout


def test_poison_rows_past_the_quarantine_caps_are_counted_once(wb: WB, caplog) -> None:
    """Poison rows go to quarantine through the poll's plan, within ``[quarantine]``."""
    from gateway.config import QuarantineSettings

    poller = wb.poller()
    poll(poller, wb.store)
    insert = ("INSERT INTO transactions (architecture, package, distribution, version, action,"
              " prevstate, state, real_user, set_user, time) VALUES ('amd64', %s, 'sid', '1',"
              " '--take', 'Needs-Build', 'Building', 'b', 'b', 'infinity')")
    for package in ("p1", "p2", "p3"):
        wb.sql(insert, (package,))
    result = poller.poll(StoreView(wb.store))
    assert [q.reason for q in result.plan.quarantine] == ["poison"] * 3
    assert apply(wb.store, result, QuarantineSettings(max_items=2)) == []
    assert len(wb.store.quarantined()) == 2
    counters = wb.store.counters()
    assert counters["quarantine.dropped"] == 1 and counters["wanna-build.poison_rows"] == 3
    assert "quarantine full" in caplog.text
    assert poll(poller, wb.store) == []  # each row is set aside once, kept or not
    assert wb.store.counters()["wanna-build.poison_rows"] == 3


def test_dry_run_stores_nothing_and_shows_what_a_poll_would_publish(wb: WB) -> None:
    poller = wb.poller()
    poll(poller, wb.store)
    cursor = wb.store.cursor(CURSOR)
    wb.change("amd64", "hello", "sid", "Building", action="--take", user=BUILDD, version="1")
    dry = poll(poller, wb.store, dry_run=True)
    assert len(dry) == 1 and wb.store.cursor(CURSOR) == cursor and wb.outbox() == []
    real = poll(poller, wb.store)
    assert [e.key for e in real] == [e.key for e in dry]
    assert poll(poller, wb.store, dry_run=True) == []


# -- failures: nothing committed, a clear message, the next poll catches up ------------------
def pending(wb: WB, n: int = 3) -> None:
    for i in range(n):
        wb.change("amd64", f"pkg{i}", "sid", "Needs-Build", action="--merge-v3: needs-build",
                  user="wbadm", version="1")


def test_database_down_is_a_transient_error(wb: WB, make_settings) -> None:
    port = free_port()
    settings = make_settings(wannabuild={"dsn": f"host=127.0.0.1 port={port} dbname=wb "
                                                f"user=busgate password=hunter2"})
    poller = from_settings(settings)
    store = runtime.open_store(settings)
    with pytest.raises(TransientError) as info:
        poll(poller, store)
    message = str(info.value)
    assert f"127.0.0.1:{port}/wb" in message and "cannot connect" in message
    assert "refused" in message.lower() and "hunter2" not in message
    assert store.cursor(CURSOR) is None and store.last_seq_id() == 0


def lock_transactions(wb: WB) -> psycopg.Connection[Any]:
    locker = psycopg.connect(wb.dsn)
    locker.execute("LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE")
    return locker


def poll_in_thread(poller: WannaBuildPoller, store: Store) -> tuple[threading.Thread, dict]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["events"] = poll(poller, store)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def waiting_backend(wb: WB) -> int:
    for _ in range(500):
        rows = wb.sql("SELECT pid FROM pg_stat_activity WHERE datname = %s"
                      " AND application_name = %s AND wait_event_type = 'Lock'",
                      (wb.name, query.APPLICATION_NAME))
        if rows:
            return rows[0][0]
        time.sleep(0.01)
    raise AssertionError("the poller never blocked on the lock")


def test_backend_terminated_mid_poll_then_nothing_lost(wb: WB) -> None:
    poller = wb.poller()
    poll(poller, wb.store)
    pending(wb)
    locker = lock_transactions(wb)
    try:
        thread, outcome = poll_in_thread(poller, wb.store)
        pid = waiting_backend(wb)  # blocked inside its read-only snapshot
        assert wb.sql("SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
        thread.join(10)
    finally:
        locker.close()
    error = outcome["error"]
    assert isinstance(error, TransientError), error
    assert "connection lost mid-poll" in str(error) and wb.name in str(error)
    assert wb.outbox() == []
    events = poll(poller, wb.store)  # reconnects
    assert sorted(e.body["package"] for e in events) == ["pkg0", "pkg1", "pkg2"]
    assert poll(poller, wb.store) == [] and len(wb.outbox()) == 3


def test_idle_connection_killed_between_polls_is_reopened(wb: WB) -> None:
    poller = wb.poller()
    poll(poller, wb.store)
    pids = wb.sql("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                  (wb.name, query.APPLICATION_NAME))
    assert len(pids) == 1
    wb.sql("SELECT pg_terminate_backend(%s)", (pids[0][0],))  # like a server restart
    pending(wb, 1)
    assert len(poll(poller, wb.store)) == 1


def test_statement_timeout(wb: WB) -> None:
    poller = wb.poller(statement_timeout_ms=100)
    poll(poller, wb.store)
    pending(wb, 1)
    locker = lock_transactions(wb)
    try:
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"statement_timeout \(100 ms\)"):
            poll(poller, wb.store)
        assert time.monotonic() - started < 5
    finally:
        locker.close()
    assert wb.outbox() == []
    assert len(poll(poller, wb.store)) == 1


def test_permission_denied_then_least_privilege_works(wb: WB) -> None:
    pending(wb, 2)
    denied, reader = wbdb.unique_name("busgate_noselect"), wbdb.unique_name("busgate_reader")
    wbdb.create_role(denied, dbname=wb.name)
    wbdb.create_role(reader, ("transactions", "packages"), dbname=wb.name)
    try:
        poller = wb.poller(dsn=wbdb.dsn(wb.name, user=denied), since="2000-01-01")
        with pytest.raises(TransientError) as info:
            poll(poller, wb.store)
        assert "permission denied" in str(info.value) and "transactions" in str(info.value)
        assert "Grant the poller's role SELECT" in str(info.value)
        assert wb.outbox() == [] and wb.store.cursor(CURSOR) is None
        # SELECT on the two tables is all it takes
        least = wb.poller(dsn=wbdb.dsn(wb.name, user=reader), since="2000-01-01")
        assert len(poll(least, wb.store)) == 2
        least.close()
        poller.close()
    finally:
        wbdb.drop_role(denied, dbnames=(wb.name,))
        wbdb.drop_role(reader, dbnames=(wb.name,))


def test_missing_column_or_table_is_named_then_nothing_lost(wb: WB) -> None:
    poller = wb.poller()
    poll(poller, wb.store)
    pending(wb, 2)
    wb.sql("ALTER TABLE transactions RENAME COLUMN set_user TO set_usr")
    with pytest.raises(TransientError, match=r"schema mismatch: column t\.set_user does not exist"):
        poll(poller, wb.store)
    wb.sql("ALTER TABLE transactions RENAME COLUMN set_usr TO set_user")
    wb.sql("ALTER TABLE packages RENAME TO packages_old")
    with pytest.raises(TransientError, match='relation "packages" does not exist'):
        poll(poller, wb.store)
    wb.sql("ALTER TABLE packages_old RENAME TO packages")
    assert wb.outbox() == []
    assert len(poll(poller, wb.store)) == 2


CRASH = """
import os, sys
from gateway import config, runtime
from gateway.polling import StoreView, apply
from gateway.store import Transaction
from adapters.wannabuild.poller import from_settings

def die(self, *args, **kwargs):  # events are in the open transaction: die before COMMIT
    os._exit(9)

Transaction.set_cursor = die
settings = config.load(sys.argv[1])
store = runtime.open_store(settings)
apply(store, from_settings(settings).poll(StoreView(store)))
"""


def test_crash_between_reading_and_publishing_loses_and_doubles_nothing(wb: WB) -> None:
    poller = wb.poller()
    poll(poller, wb.store)
    cursor = wb.store.cursor(CURSOR)
    pending(wb, 3)
    crashed = subprocess.run([sys.executable, "-c", CRASH, wb.settings.loaded_from[0]], cwd=REPO,
                             capture_output=True, text=True, timeout=30)
    assert crashed.returncode == 9, crashed.stderr
    assert wb.outbox() == [] and wb.store.cursor(CURSOR) == cursor
    events = poll(poller, wb.store)
    assert len(events) == 3
    again = subprocess.run([*BUSGATE, "poll", "wanna-build", "--once",
                            "--config", wb.settings.loaded_from[0]],
                           cwd=REPO, capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert "0 new events" in again.stdout
    assert len(wb.outbox()) == 3


# -- the read itself -----------------------------------------------------------------------
def test_reads_are_read_only_and_time_bounded(wb: WB) -> None:
    reader = query.Reader(wb.dsn, statement_timeout_ms=1234)
    try:
        with reader.snapshot() as snap:
            conn = snap._conn
            assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
            assert conn.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
            assert conn.execute("SHOW statement_timeout").fetchone() == ("1234ms",)
        with pytest.raises(TransientError, match="ReadOnlySqlTransaction"), \
                reader.snapshot() as snap:
            snap._conn.execute("DELETE FROM transactions")
    finally:
        reader.close()


def test_range_read_is_index_backed_and_reads_only_new_rows(wb: WB, caplog) -> None:
    wb.sql("""INSERT INTO transactions (architecture, package, distribution, version, action,
              prevstate, state, real_user, set_user, time)
              SELECT 'amd64', 'p' || i, 'sid', '1', '--take', 'Needs-Build', 'Building', 'b', 'b',
                     now() - interval '1 day' + i * interval '1 ms'
              FROM generate_series(1, 20000) i""")
    wb.sql("ANALYZE transactions")
    plan = "\n".join(r[0] for r in wb.sql(
        "EXPLAIN " + query.SQL_AFTER,
        {"low": dt.datetime.now() - dt.timedelta(minutes=5), "limit": 10000, "field": 1001,
         "failed": 4001}))
    assert "transactions_time" in plan, plan
    poller = wb.poller()
    poll(poller, wb.store)
    assert poller.reader.time_index is True
    pending(wb, 50)
    assert len(poll(poller, wb.store)) == 50
    assert poller.last_rows_read == 50  # the 20,000 older rows are not touched
    assert poll(poller, wb.store) == []
    # no window is re-read: at most the last seconds' rows by xids the last snapshot may
    # not have seen (its xmin is cluster-wide: other databases' transactions hold it back)
    assert poller.last_rows_read <= 50
    late_plan = "\n".join(r[0] for r in wb.sql(
        "EXPLAIN " + query.SQL_LATE,
        {"low": dt.datetime.now() - dt.timedelta(minutes=5), "high": dt.datetime.now(),
         "xmin32": 0, "span": 2**32, "field": 1001, "failed": 4001}))
    assert "transactions_time" in late_plan, late_plan
    # without the index it still works, and says what is missing; a new poller (a
    # restart) needs no memory of its own: the cursor says what is left to read
    wb.sql("DROP INDEX transactions_time")
    with caplog.at_level(logging.WARNING, logger="adapters.wannabuild.query"):
        fresh = wb.poller()
        assert poll(fresh, wb.store) == []
        assert fresh.last_rows_read <= 50
    assert fresh.reader.time_index is False
    assert 'CREATE INDEX transactions_time ON transactions ("time")' in caplog.text


def test_sql_ascii_database_with_non_utf8_bytes(template: str, make_settings) -> None:
    name = wbdb.unique_name()
    dsn = wbdb.create(name, encoding="SQL_ASCII")
    try:
        settings = make_settings(wannabuild={"dsn": dsn, "since": "2000-01-01"})
        with psycopg.connect(dsn, autocommit=True) as conn:  # raw bytes, as SQL_ASCII allows
            conn.execute(b"INSERT INTO packages (architecture, package, distribution, version,"
                         b" state, failed) VALUES ('amd64', 'caf\xe9', 'sid', '1', 'Failed',"
                         b" 'gcc: \xe9chec \xff')")
            conn.execute(b"INSERT INTO transactions VALUES ('amd64', 'caf\xe9', 'sid', '1',"
                         b" '--set-failed', 'Building', 'Failed', 'b', 'b', now())")
        poller = from_settings(settings)
        event = only(poll(poller, runtime.open_store(settings)))
        poller.close()
        assert event.body["package"] == "caf\\xe9"
        assert event.body["failed"] == "gcc: \\xe9chec \\xff"
        assert event.event == "failed"
    finally:
        wbdb.drop(name)


def test_timezone_of_the_writers(wb: WB) -> None:
    berlin = wbdb.Writer(wb.dsn + " options='-c TimeZone=Europe/Berlin'")
    try:
        poller = wb.poller(timezone="Europe/Berlin")
        poll(poller, wb.store)
        before = time.time()
        berlin.change("amd64", "tz", "sid", "Building", action="--take", user="b", version="1")
        event = only(poll(poller, wb.store))
    finally:
        berlin.close()
    stored = wb.sql("SELECT time FROM transactions WHERE package = 'tz'")[0][0]
    assert event.time == pytest.approx(
        stored.replace(tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")).timestamp())
    assert before - 1 < event.time < time.time() + 1


# -- command line and daemon ---------------------------------------------------------------
def busgate(*args: str, config_path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BUSGATE, *args, "--config", config_path], cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def test_cli_once_dry_run_dsn_since(wb: WB, make_settings, tmp_path: Path) -> None:
    pending(wb, 2)
    settings = make_settings(wannabuild={"dsn": "host=127.0.0.1 port=1 dbname=nowhere"},
                             state={"dir": str(tmp_path / "cli-state")})
    conf = settings.loaded_from[0]
    dry = busgate("poll", "wanna-build", "--once", "--dry-run", "--dsn", wb.dsn,
                  "--since", "2000-01-01T00:00:00Z", config_path=conf)
    assert dry.returncode == 0, dry.stderr
    lines = [json.loads(line) for line in dry.stdout.splitlines()]
    assert [line["topic"] for line in lines] == ["org.debian.dev.wanna-build.build.needs-build"] * 2
    assert {line["msg"]["package"] for line in lines} == {"pkg0", "pkg1"}
    assert not settings.db_path.exists()  # a dry run writes no state
    refused = busgate("poll", "wanna-build", "--once", "--dsn", wb.dsn, config_path=conf)
    assert refused.returncode == 75 and "holds no busgate state" in refused.stderr
    assert not settings.db_path.exists()  # nor does a poll where no daemon publishes
    adopt(settings)
    down = busgate("poll", "wanna-build", "--once", config_path=conf)
    assert down.returncode == 75 and "cannot connect" in down.stderr
    assert "nothing stored" in down.stderr
    first = busgate("poll", "wanna-build", "--once", "--dsn", wb.dsn, config_path=conf)
    assert first.returncode == 0 and "0 new events" in first.stdout, first.stderr
    pending(wb, 3)
    second = busgate("poll", "wanna-build", "--once", "--dsn", wb.dsn, config_path=conf)
    assert second.returncode == 0 and "3 new events" in second.stdout, second.stderr
    bad = busgate("poll", "wanna-build", "--once", "--dsn", wb.dsn, "--since", "tomorrow",
                  config_path=conf)
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_registry_and_daemon_publish_with_back_off(wb: WB, daemon) -> None:
    from gateway import discovery, heartbeat
    from gateway.subscriber import Subscriber

    settings = wb.make_settings(wannabuild={"dsn": wb.dsn, "enabled": True, "interval": 0.2,
                                            "since": "2000-01-01"})
    assert "wanna-build" in pollers.enabled(settings)
    assert isinstance(pollers.make("wanna-build", settings), WannaBuildPoller)
    wb.sql("ALTER TABLE transactions RENAME COLUMN state TO status")  # broken at start-up
    pending(wb, 2)
    proc, settings = daemon(wannabuild={"dsn": wb.dsn, "enabled": True, "interval": 0.2,
                                        "since": "2000-01-01"})
    deadline = time.monotonic() + 15
    while "schema mismatch" not in proc.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "poller wanna-build failed" in proc.output() and "schema mismatch" in proc.output()
    wb.sql("ALTER TABLE transactions RENAME COLUMN status TO state")
    with Subscriber(discovery.discover(settings), heartbeat_topic=heartbeat.topic(
            settings.topic_prefix), resume_from=0) as sub:
        got = list(sub.messages(count=2, timeout=15))
    assert sorted(m.body["package"] for m in got) == ["pkg0", "pkg1"]
    assert {m.topic for m in got} == {"org.debian.dev.wanna-build.build.needs-build"}
    assert proc.stop() == 0
