"""Group commit in the spool worker (issue 16): many one-event items share a
transaction, every event still reaches the bus once and in contiguous order, and a
poison item inside a group is quarantined alone."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from gateway import discovery, heartbeat, ingest, runtime
from gateway.attempts import GROUP, MARK, Attempts
from gateway.event import Event
from gateway.spool import Spool
from gateway.subscriber import Subscriber

WRITERS = 4
PER_WRITER = 500


def one_event(key: str, **fields: object) -> bytes:
    record = Event("logger", "message", "log", key=key, body={"key": key}).to_dict()
    return json.dumps({**record, **fields}).encode() + b"\n"


def test_one_event_items_from_concurrent_writers_arrive_once_in_order(daemon) -> None:
    _proc, settings = daemon(zmq={"heartbeat_interval": 0.3})
    spool = runtime.open_spool(settings)
    store = runtime.open_store(settings)
    total = WRITERS * PER_WRITER

    def write(writer: int) -> None:
        for n in range(PER_WRITER):
            spool.deliver("events", one_event(f"gc:{writer}:{n}"))
            if writer == 0 and n in (100, 250):  # poison among them: quarantined alone
                spool.deliver("events", b"not json\n" if n == 100
                              else one_event("gc:long", object="x" * 250))

    received: dict[str, int] = {}
    seq_ids: list[int] = []
    with Subscriber(discovery.discover(settings), resume_from=0,
                    heartbeat_topic=heartbeat.topic(settings.topic_prefix)) as sub:
        writers = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
        for thread in writers:
            thread.start()
        for message in sub.messages(idle=5.0, timeout=120):
            received[message.body["key"]] = received.get(message.body["key"], 0) + 1
            seq_ids.append(message.envelope["seq_id"])
            if len(seq_ids) == total:
                break
        for thread in writers:
            thread.join()
    assert len(received) == total and set(received.values()) == {1}
    assert seq_ids == list(range(1, total + 1))
    conn = store.connect()
    assert conn.execute("SELECT COUNT(DISTINCT key), MIN(seq_id), MAX(seq_id) FROM outbox"
                        ).fetchone() \
        == (total, 1, total)
    assert store.counters()["ingested.events"] == total
    deadline = time.monotonic() + 30  # the last group's entries go right after its commit
    while spool.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool.pending() == [] and store.quarantine_counts() == {"error": 2}


def test_poison_items_inside_a_group_are_quarantined_alone(make_settings) -> None:
    """Real store and spool: one group of 40 items holding a parse poison and an
    envelope poison (topic too long) commits the 38 others, in order."""
    settings = make_settings()
    store = runtime.open_store(settings)
    spool = runtime.open_spool(settings)
    spool.ensure()
    for n in range(40):
        if n == 10:
            spool.deliver("events", b"not json\n")
        elif n == 25:
            spool.deliver("events", one_event("gc:long", object="x" * 250))
        else:
            spool.deliver("events", one_event(f"gc:{n}"))
    commits: list[str] = []
    store.connect().set_trace_callback(
        lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    outcomes: dict[str, ingest.Outcome] = {}
    attempts = Attempts(spool.root, settings.ingest.max_crashes)

    def done(path: Path, outcome: ingest.Outcome) -> None:
        outcomes[path.name] = outcome
        Spool.remove(path)

    ingest.ingest_group(store, settings, spool.pending(), attempts, done)
    assert len(outcomes) == 40 and spool.pending() == []
    assert sorted(o.quarantined or "" for o in outcomes.values()).count("error") == 2
    assert store.quarantine_counts() == {"error": 2}
    errors = " | ".join(q["error"] for q in store.quarantined())
    assert "not a JSON event record" in errors and "more than 255" in errors
    keys = [json.loads(r.envelope)["msg"]["key"] for r in store.rows_after(0)]
    assert keys == [f"gc:{n}" for n in range(40) if n not in (10, 25)]
    assert [r.seq_id for r in store.rows_after(0)] == list(range(1, 39))
    # the group failed once on the envelope poison and was committed item by item:
    # 2 quarantine commits + 38 single commits; without the poison it is one commit
    assert len(commits) == 2 + 38
    assert not (spool.root / MARK).exists()

    for n in range(40, 80):
        spool.deliver("events", one_event(f"gc:{n}"))
    commits.clear()
    ingest.ingest_group(store, settings, spool.pending(), attempts, done)
    assert len(commits) == 1 and store.last_seq_id() == 78


def split_into_commits(settings, items: list[bytes], events: int | None = None) -> int:
    """Ingest ``items`` as one run of the worker; the number of transactions committed."""
    store = runtime.open_store(settings)
    spool = runtime.open_spool(settings)
    spool.ensure()
    for item in items:
        spool.deliver("events", item)
    commits: list[str] = []
    store.connect().set_trace_callback(
        lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    ingest.ingest_group(store, settings, spool.pending(), Attempts(spool.root, 2),
                        lambda path, outcome: Spool.remove(path))
    assert store.last_seq_id() == (events or len(items)) and spool.pending() == []
    return len(commits)


def test_a_group_is_split_at_its_caps(make_settings, tmp_path) -> None:
    def fresh(run: str, **ingest_caps: int):
        return make_settings(state={"dir": str(tmp_path / run)}, ingest=ingest_caps)

    small = [one_event(f"gc:{n:03d}") for n in range(20)]
    big = one_event("gc:big", body={"big": "b" * 5000})  # over group_bytes: alone
    settings = fresh("items", group_items=7, group_bytes=4096)
    assert split_into_commits(settings, [*small, big]) == 3 + 1  # 7 + 7 + 6, then big
    size = len(small[0])
    settings = fresh("bytes", group_bytes=5 * size)
    assert split_into_commits(settings, small) == 4  # 5 items per group
    many = [b"".join(one_event(f"gc:{n}:{e}") for e in range(3000)) for n in range(4)]
    # 10,000 events per transaction at most: 3 + 1 items
    assert split_into_commits(fresh("events"), many, events=12000) == 2


def test_a_death_while_a_group_commits_makes_its_items_go_one_by_one(tmp_path) -> None:
    """The mark names the group; the next worker holds no crash against any of them
    but ingests each alone under its own mark (where a culprit is counted)."""
    attempts = Attempts(tmp_path, max_crashes=2)
    attempts.begin_group(["1.a.events", "2.b.events"])
    assert (tmp_path / MARK).read_text().splitlines()[0] == GROUP
    # the worker died here: a new one reads the mark
    after = Attempts(tmp_path, max_crashes=2)
    assert after.crashes == {} and after.suspects == {"1.a.events", "2.b.events"}
    assert not after.groupable("1.a.events") and after.groupable("3.c.events")
    assert after.begin("1.a.events") == 0
    after.end("1.a.events")
    assert after.groupable("1.a.events") and not after.groupable("2.b.events")
    assert not (tmp_path / MARK).exists()


def test_a_crash_mark_holds_any_item_name(tmp_path) -> None:
    """A name with a newline (only a local writer into spool/new can make one) must not
    hide the item a worker died on: the count comes first, the name last, whole."""
    name = "1.evil\nname.events"
    attempts = Attempts(tmp_path, max_crashes=2)
    assert attempts.begin(name) == 0  # the worker dies here
    after = Attempts(tmp_path, max_crashes=2)
    assert after.crashes == {name: 1}
    assert after.begin(name) == 1  # dies again
    assert Attempts(tmp_path, max_crashes=2).begin(name) is None  # quarantined as crashed


def test_a_mark_left_by_another_daemon_run_counts_no_crash(tmp_path) -> None:
    """A worker restarted by its daemon counts its predecessor's death against the item;
    a new daemon run (the daemon itself was killed) retries the item alone, uncounted, so
    two hard stops of the daemon never quarantine good input."""
    name = "1.a.events"
    Attempts(tmp_path, max_crashes=2, owner="run1").begin(name)  # killed here
    same_run = Attempts(tmp_path, max_crashes=2, owner="run1")
    assert same_run.crashes == {name: 1} and not same_run.groupable(name)
    other_run = Attempts(tmp_path, max_crashes=2, owner="run2")
    assert other_run.crashes == {name: 0} and not other_run.groupable(name)  # alone
    for run in ("run3", "run4", "run5"):  # killed again and again: never quarantined
        assert Attempts(tmp_path, max_crashes=2, owner=run).begin(name) == 0
    (tmp_path / MARK).write_text(f"1\n{name}")  # a mark without owner (older busgate)
    assert Attempts(tmp_path, max_crashes=2, owner="run6").begin(name) is None


def test_one_crash_mark_names_a_group_while_it_is_parsed(make_settings) -> None:
    """Parsing a group writes one mark naming all its items, not one per item; a worker
    dying while it is there (seen from inside, as each outcome is reported) leaves every
    item of the group to be ingested alone by the next worker, none of them counted."""
    settings = make_settings()
    store = runtime.open_store(settings)
    spool = runtime.open_spool(settings)
    spool.ensure()
    for n in range(30):
        spool.deliver("events", one_event(f"mark:{n}"))
    paths = spool.pending()
    names = {path.name for path in paths}
    marks: list[str] = []

    class Counting(Attempts):
        def begin(self, name: str) -> int | None:
            marks.append(name)
            return super().begin(name)

        def begin_group(self, group: list[str]) -> None:
            marks.append(GROUP)
            super().begin_group(group)

    seen: list[Attempts] = []

    def done(path: Path, outcome: ingest.Outcome) -> None:
        assert outcome.added == 1
        seen.append(Attempts(spool.root, max_crashes=2))  # what a successor would read
        Spool.remove(path)

    ingest.ingest_group(store, settings, paths, Counting(spool.root, 2), done)
    assert marks == [GROUP] and store.last_seq_id() == 30
    assert not (spool.root / MARK).exists()
    assert len(seen) == 30
    assert all(after.suspects == names and after.crashes == {} for after in seen)
    assert not any(seen[0].groupable(name) for name in names)
