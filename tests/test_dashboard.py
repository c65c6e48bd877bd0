"""The live dashboard of ``busgate web`` over HTTP on a real uvicorn: the pages, their
escaping and filters, the SSE stream (live events, filters, resume, its bounds), CORS
on the JSON API only, and the store methods behind them (since, activity rollup)."""

from __future__ import annotations

import asyncio
import itertools
import json
import queue
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx
import pytest

from gateway import config
from gateway.errors import ConfigError
from gateway.history import dashboard, migrate, web
from gateway.history import stream as live
from gateway.history.records import record_of
from gateway.history.store import HistoryStore, Position, SqliteHistory
from gateway.messages import Message, TypeIndex
from tests import dashboard_helpers as dh
from tests import history_fixture as fx

NOW = time.time()
HOUR = 3600
DAK = "org.debian.dev.dak.package.accept"
BUG = "org.debian.dev.debbugs.bug.report"


def dak(number: int, source: str, stamp: float = NOW, **extra: object) -> dict:
    body = {"source": source, "version": "1.0-1", "distribution": "unstable",
            "changed_by": "Jörg Müller <jm@debian.org>", **extra}
    return dh.envelope(number, DAK, body, stamp, users=("jorg",), packages=(source,))


def bug(number: int, package: str, stamp: float = NOW, title: str = "broken") -> dict:
    body = {"bug": 700000 + number, "type": "report", "package": package, "source": "",
            "title": title, "tags": [], "from": "Ann <ann@example.org>",
            "message_id": f"<{number}@example.org>",
            "link": f"https://bugs.debian.org/{700000 + number}", "via": "mail"}
    return dh.envelope(number, BUG, body, stamp, users=("ann",), packages=(package,))


@pytest.fixture
def store(history_store) -> Iterator[HistoryStore]:
    """A new empty history, on SQLite and on PostgreSQL (``history_store``)."""
    history = history_store()
    yield history
    history.close()


def lines(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<li class="msg" data-id="(\d+)"', page)]


# -- store ---------------------------------------------------------------------------------
def settled(store: HistoryStore, after: Position, limit: int, want: int) -> list:
    """``store.since`` once it has ``want`` rows: on PostgreSQL the feed waits for every
    write transaction older than its rows to end, on the whole server (other tests')."""
    deadline = time.monotonic() + 30
    while len(rows := store.since(after, limit)) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    return rows


def test_since_reads_in_commit_order_with_a_limit(store):
    start = Position(0, 0)
    assert store.since(start, 10) == [] and store.last_position() == start
    dh.seed(store, 37, NOW)
    feed = settled(store, start, 100, 37)
    assert [row.id for _, row in feed] == list(range(1, 38))  # one writer: id order
    assert [at for at, _ in feed] == sorted(at for at, _ in feed)
    assert store.last_position() == feed[-1][0]
    rows = store.since(feed[29][0], 5)
    assert [r.id for _, r in rows] == [31, 32, 33, 34, 35]
    assert rows[0][1].msg_id == dh.msg_id(31) and rows[0][1].envelope.startswith("{")
    assert [r.id for _, r in store.since(rows[-1][0], 100)] == [36, 37]
    assert store.position_of(31) == rows[0][0]
    for at, _ in feed:  # the SSE id a browser sends back names the same place
        assert Position.parse(at.token()) == at or Position.parse(at.token()) == at.id
    if not isinstance(store, SqliteHistory):  # SQLite needs no look-up: id is position
        assert store.position_of(999) is None


def test_position_tokens_parse_back_and_refuse_junk():
    assert Position.parse("17") == 17  # a plain message id: its position is looked up
    assert Position.parse("0") == Position(0, 0) == Position.parse(Position(0, 0).token())
    assert Position.parse("12-17") == Position(12, 17)
    assert Position(0, 17).token() == "17" and Position(12, 17).token() == "12-17"
    assert Position(12, 1) < Position(12, 2) < Position(13, 0)
    for junk in ("", "-", "1-", "-1", "1-2-3", "x1", "1.5", " 1", "١٢", "9" * 21,
                 f"{2**64}-1", f"1-{2**63}"):
        with pytest.raises(ValueError):
            Position.parse(junk)


def test_sqlite_commits_in_id_order_with_two_writers(tmp_path):
    """Two stores (two connections, as two recorders) writing at once: a reader that only
    ever asks for rows after the last id it got still gets every row, once. SQLite lets
    one transaction write at a time and takes a rowid inside it, so id order is commit
    order (the claim :class:`~gateway.history.store.Position` makes)."""
    path = tmp_path / "history.sqlite"
    writers = [SqliteHistory(path), SqliteHistory(path)]
    reader = SqliteHistory(path)
    per_writer, batches = 600, 30
    # both writers start each batch together, so they contend for the write lock in
    # every round whatever the scheduler does (a loaded machine can otherwise run one
    # writer's 30 batches before the other starts, and nothing would be tested)
    rounds = threading.Barrier(2, timeout=30)

    def write(number: int) -> None:
        store = writers[number]
        first = 1 + number * per_writer
        for at in range(first, first + per_writer, per_writer // batches):
            rounds.wait()
            dh.add(store, *(dh.envelope(n, BUG, {"bug": n, "package": "p"}, NOW)
                            for n in range(at, at + per_writer // batches)))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    got: list[int] = []
    writer_of: list[int] = []  # which writer stored each row, in the order read
    position = Position(0, 0)
    try:
        while True:
            finished = not any(t.is_alive() for t in threads)
            rows = reader.since(position, 50)
            for position, row in rows:  # noqa: B007 (the last one is where to go on)
                got.append(row.id)
                writer_of.append(json.loads(row.envelope)["seq_id"] > per_writer)
            if finished and len(rows) < 50:
                break
    finally:
        for thread in threads:
            thread.join(30)
        for store in (*writers, reader):
            store.close()
    assert len(got) == 2 * per_writer and got == sorted(set(got))  # all, once, in order
    switches = sum(a != b for a, b in itertools.pairwise(writer_of))
    assert switches >= 2, "the two writers did not interleave: nothing was tested"


def test_activity_counts_per_service_and_bucket_from_the_rollup(store):
    base = 1_800_000_000 // 86400 * 86400  # midnight
    dh.add(store, dak(1, "a", base + 10), dak(2, "b", base + 3599), bug(3, "c", base + 3600),
           bug(4, "d", base + 7 * HOUR + 5), dak(5, "e", base - 1))
    assert store.activity(base, base + 8 * HOUR, HOUR) == {
        "dak": [2, 0, 0, 0, 0, 0, 0, 0], "debbugs": [0, 1, 0, 0, 0, 0, 0, 1]}
    assert store.activity(base, base + 8 * HOUR, 6 * HOUR) == {"dak": [2, 0],
                                                               "debbugs": [1, 1]}
    # start inside an hour counts that whole hour; end is exclusive by hours
    assert store.activity(base + 1800, base + 2 * HOUR, HOUR) == {"dak": [2, 0],
                                                                  "debbugs": [0, 1]}
    assert store.activity(base + 9 * HOUR, base + 10 * HOUR, HOUR) == {}
    with pytest.raises(ValueError):
        store.activity(base, base + HOUR, 1800)
    with store.transaction() as db:
        rollup = db.execute("SELECT COUNT(*), SUM(count) FROM activity_hourly").fetchone()
    assert rollup == (4, 5)  # the chart never reads the messages table


def test_activity_migration_fills_the_rollup_for_stored_messages(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    first = migrate.migrations("sqlite")[0]
    db.execute("CREATE TABLE history_migrations (version INTEGER PRIMARY KEY, name TEXT"
               " NOT NULL, applied REAL NOT NULL)")
    for statement in migrate._statements(first.sql):
        db.execute(statement)
    db.execute("INSERT INTO history_migrations VALUES (1, ?, 0)", (first.name,))
    db.close()
    old = sqlite3.connect(path, isolation_level=None)  # a v1 writer, without the migration
    stamp = 1_800_000_000 // 3600 * 3600
    for record in (record_of(dak(1, "a", stamp), dh.index()),
                   record_of(bug(2, "b", stamp + 60), dh.index()),
                   record_of(bug(3, "c", stamp + HOUR), dh.index())):
        fx.add_as_v1(old, record)
    old.close()
    store = SqliteHistory(path)  # migrates to the newest version
    try:
        assert store.activity(stamp, stamp + 2 * HOUR, HOUR) == {"dak": [1, 0],
                                                                 "debbugs": [1, 1]}
        dh.add(store, dak(4, "d", stamp + 5))  # and the trigger keeps it up to date
        assert store.activity(stamp, stamp + HOUR, HOUR) == {"dak": [2], "debbugs": [1]}
    finally:
        store.close()


# -- pages ---------------------------------------------------------------------------------
def test_index_shows_the_newest_messages_charts_and_the_stream(store):
    dh.seed(store, 60, NOW)
    with dh.serve(store) as url:
        page = httpx.get(url + "/", headers={"Origin": "https://elsewhere.example"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "'self'" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert "access-control-allow-origin" not in page.headers  # HTML is not shared
    assert lines(page.text) == list(range(60, 35, -1))  # 25, newest first
    after = re.search(r'data-stream="/v2/stream\?after=([0-9-]+)"', page.text)
    assert after, "the stream starts where the page was read"
    if isinstance(store, SqliteHistory):
        assert after.group(1) == "60"
    else:  # PostgreSQL: a position, at most the newest (other tests' transactions hold it)
        assert Position.parse(after.group(1)) <= store.last_position()
    assert '<meta name="viewport"' in page.text
    assert page.text.count("<svg") == 2 and page.text.count("<rect") > 10
    assert "Last 24 hours" in page.text and "Last 7 days" in page.text
    # the golden events' real summaries and links
    assert "accepted into unstable" in page.text or "reported" in page.text
    assert 'href="https://' in page.text


class EvilLink(Message):
    name = "test.evil.v1"
    topic_tokens = ("evil", "*")

    @property
    def summary(self) -> str:
        return str(self.body.get("title"))

    @property
    def url(self) -> str:
        return "javascript:alert(1)"


def test_hostile_text_is_shown_as_text_and_bad_links_are_dropped(store):
    dh.add(store, dh.envelope(1, "org.debian.dev.evil.thing",
                              {"title": "<script>alert('x')</script> & <b>bold</b>"}, NOW,
                              users=('"><img src=x onerror=alert(1)>',),
                              packages=("a<b",)))
    with dh.serve(store) as url:
        page = httpx.get(url + "/").text
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;bold" in page
    assert "/user/%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E" in page
    assert "/package/a%3Cb" in page
    row = settled(store, Position(0, 0), 1, 1)[0][1]
    line = dashboard.line_of(row, TypeIndex([EvilLink]))
    assert line.summary.startswith("<script>") and line.url is None
    assert "javascript" not in dashboard.event_of(line).data


def test_filters_are_urls_and_bad_ones_a_400(store):
    dh.add(store, dak(1, "hebcal", NOW - 50), bug(2, "dpkg", NOW - 40),
           bug(3, "hebcal", NOW - 30), dak(4, "dpkg", NOW - 20))
    with dh.serve(store) as url, httpx.Client(base_url=url, timeout=10) as web:
        assert lines(web.get("/?category=debbugs").text) == [3, 2]
        hebcal = web.get("/?package=hebcal&category=&topic=&user=").text
        assert lines(hebcal) == [3, 1]  # empty form fields ignored
        after = "4" if isinstance(store, SqliteHistory) else "[0-9]+-4|0"  # PG: a position
        assert re.search(f'data-stream="/v2/stream\\?package=hebcal&amp;after=({after})"',
                         hebcal), "the stream's filter and start"
        assert 'name="package" value="hebcal"' in hebcal
        assert lines(web.get("/?package=hebcal&not_category=dak").text) == [3]
        assert lines(web.get("/?user=jorg&user=ann&topic=" + DAK).text) == [4, 1]
        for bad, word in (("/?contains=abc", "contains"), ("/?page=2", "page"),
                          ("/?category=" + "x" * 300, "longer than")):
            answer = web.get(bad)
            assert answer.status_code == 400 and word in answer.text
            assert answer.headers["content-type"].startswith("text/html")


def test_package_and_user_pages_page_through_a_month(store):
    month = "2026-11"
    start = 1_793_491_200  # 2026-11-01T00:00Z
    dh.add(store, *(dak(i, "hebcal", start + i * 3000) for i in range(1, 61)),
           dak(61, "hebcal", start - 10), bug(62, "other", start + 10))
    with dh.serve(store) as url, httpx.Client(base_url=url, timeout=10) as web:
        first = web.get(f"/package/hebcal?month={month}")
        assert first.status_code == 200 and "'self'" in first.headers["content-security-policy"]
        assert lines(first.text) == list(range(60, 10, -1))
        assert '<span id="total">60</span>' in first.text
        older = re.search(r'id="older" href="([^"]+)"', first.text).group(1)
        second = web.get("/package/hebcal" + older.replace("&amp;", "&")).text
        assert lines(second) == list(range(10, 0, -1)) and 'id="older"' not in second
        assert "← 2026-10" in first.text
        assert lines(web.get("/package/hebcal?month=2026-10").text) == [61]
        assert lines(web.get(f"/user/ann?month={month}").text) == [62]
        assert first.text.count("<svg") == 1 and "2026-11, per day · 60 messages" in first.text
        assert web.get("/package/hebcal?month=11-2026").status_code == 400
        assert web.get("/user/ann?bogus=1").status_code == 400
        assert web.get("/package/hebcal?cursor=zzz").status_code == 400


def test_a_name_page_whose_count_was_cut_says_at_least(tmp_path):
    """A count stopped by ``history.count_limit`` (or the count budget) is a lower bound;
    the page says so rather than showing it as the month's total."""
    store = SqliteHistory(tmp_path / "capped.sqlite", count_limit=30)
    start = 1_793_491_200  # 2026-11-01T00:00Z
    dh.add(store, *(dak(i, "hebcal", start + i * 3000) for i in range(1, 61)))
    try:
        with dh.serve(store) as url, httpx.Client(base_url=url, timeout=10) as web:
            text = web.get("/package/hebcal?month=2026-11").text
    finally:
        store.close()
    total = re.search(r'(at least )?<span id="total">(\d+)</span>', text)
    assert total and total.group(1) == "at least " and int(total.group(2)) <= 60


def test_name_activity_counts_a_name_per_day_and_service(store):
    start = 1_793_491_200  # 2026-11-01T00:00Z
    day = 86400
    dh.add(store, *(dak(i, "hebcal", start + i * 3000) for i in range(1, 61)),
           bug(61, "hebcal", start + 10), bug(62, "other", start + 20),
           dak(63, "hebcal", start + 30 * day))
    days = [28, 29, 3] + [0] * 27
    assert store.name_activity("packages", "hebcal", start, start + 30 * day, day) == {
        "dak": days, "debbugs": [1] + [0] * 29}
    assert store.name_activity("users", "ann", start, start + 2 * day, day) == {
        "debbugs": [2, 0]}
    assert store.name_activity("packages", "nobody", start, start + day, day) == {}
    # the generic default (any store): one series from search() counts
    assert HistoryStore.name_activity(store, "packages", "hebcal", start, start + 3 * day,
                                      day) == {"messages": [29, 29, 3]}


def test_cors_on_the_json_api_only(store):
    dh.add(store, dak(1, "hebcal"))
    origin = {"Origin": "https://apps.example"}
    with dh.serve(store) as url, httpx.Client(base_url=url, timeout=10) as web:
        for path in ("/raw", "/v2/search?package=hebcal", f"/v2/id?id={dh.msg_id(1)}",
                     "/id?id=missing", "/messagecount", "/healthz", "/raw?page=0"):
            answer = web.get(path, headers=origin)
            assert answer.headers["access-control-allow-origin"] == "*", path
        preflight = web.options("/raw", headers={**origin,
                                                 "Access-Control-Request-Method": "GET"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"
        for path in ("/", "/package/hebcal", "/static/dashboard.js"):
            answer = web.get(path, headers=origin)
            assert answer.status_code == 200
            assert "access-control-allow-origin" not in answer.headers, path


# -- stream --------------------------------------------------------------------------------
class Stream:
    """An SSE client on a thread over a plain socket (HTTP/1.0: no chunking, and closing
    the socket ends the read at once): frames and comments arrive on a queue."""

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        self.frames: queue.Queue[dict[str, str]] = queue.Queue()
        self.status: int | None = None
        self.body = b""
        address, _, path = url.removeprefix("http://").partition("/")
        host, port = address.split(":")
        self._sock = socket.create_connection((host, int(port)), timeout=30)
        head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._sock.sendall(f"GET /{path} HTTP/1.0\r\nHost: {address}\r\n{head}\r\n".encode())
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the stream did not answer"

    def _read(self) -> None:
        try:
            reader = self._sock.makefile("rb")
            self.status = int(reader.readline().split()[1])
            while reader.readline().strip():
                pass  # headers
            if self.status != 200:
                self.body = reader.read()
                return
            frame: dict[str, str] = {}
            for raw in reader:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("retry:"):
                    self._ready.set()  # registered: every later message comes
                elif line.startswith(":"):
                    self.frames.put({"comment": line})
                elif line:
                    key, _, value = line.partition(": ")
                    frame[key] = value
                elif frame:
                    self.frames.put(frame)
                    frame = {}
        except (OSError, ValueError, IndexError):
            pass
        finally:
            self._ready.set()
            self.frames.put({"closed": "1"})

    def next(self, timeout: float = 10) -> dict[str, str]:
        return self.frames.get(timeout=timeout)

    def ids(self, count: int, timeout: float = 10) -> list[int]:
        out: list[int] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            frame = self.next(max(0.1, deadline - time.monotonic()))
            if "id" in frame:
                out.append(json.loads(frame["data"])["id"])
            assert "closed" not in frame, out
        return out

    def close(self) -> None:
        with suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(10)


@contextmanager
def stream(url: str, headers: dict[str, str] | None = None) -> Iterator[Stream]:
    client = Stream(url, headers)
    try:
        yield client
    finally:
        client.close()


def test_stream_sends_new_messages_with_filters_and_resumes(store):
    dh.add(store, dak(1, "hebcal", NOW - 100))
    settled(store, Position(0, 0), 10, 1)  # PostgreSQL: final, so a new stream starts past it
    with dh.serve(store, keepalive=0.5) as url:
        with stream(url + "/v2/stream") as every, \
                stream(url + "/v2/stream?category=debbugs&not_package=dpkg") as bugs:
            dh.add(store, bug(2, "dpkg"), dak(3, "hebcal"), bug(4, "hebcal"), bug(5, "x"))
            assert every.ids(4) == [2, 3, 4, 5]  # message 1 was there before: not sent
            assert bugs.ids(2) == [4, 5]
            frame = next(f for f in iter(lambda: every.next(5), None) if "comment" in f)
            assert frame["comment"] == ": keep-alive"
        with stream(url + "/v2/stream?category=debbugs", {"Last-Event-ID": "2"}) as resumed:
            frame = resumed.next()
            assert json.loads(frame["data"])["id"] == 4
            event = json.loads(frame["data"])
            assert event["service"] == "debbugs" and event["packages"] == ["hebcal"]
            assert event["summary"] and event["url"].startswith("https://bugs.debian.org/")
            assert resumed.ids(1) == [5]
        with stream(url + "/v2/stream?after=3&package=hebcal") as after:
            assert after.ids(1) == [4]  # the page's starting point when no Last-Event-ID
            dh.add(store, dak(6, "hebcal"))
            assert after.ids(1) == [6]
        with httpx.Client(base_url=url, timeout=5) as web:
            for bad, parameter in (("/v2/stream?contains=abc", "contains"),
                                   ("/v2/stream?after=-1", "after"),
                                   ("/v2/stream?user=" + "x" * 300, "user")):
                answer = web.get(bad)
                assert answer.status_code == 400 and answer.json()["parameter"] == parameter
            answer = web.get("/v2/stream", headers={"Last-Event-ID": "x1"})
            assert answer.status_code == 400
            assert answer.json()["parameter"] == "Last-Event-ID"


def test_a_damaged_row_is_skipped_by_the_page_and_the_stream(store):
    dh.add(store, dak(1, "hebcal"))
    settled(store, Position(0, 0), 10, 1)
    with dh.serve(store) as url, stream(url + "/v2/stream") as live:
        with store.transaction() as db:  # a row no busgate wrote, on either backend
            if isinstance(store, SqliteHistory):
                db.execute("INSERT INTO messages (msg_id, topic, category, timestamp, envelope)"
                           " VALUES ('broken', 'org.debian.dev.dak.x', 'dak', ?, '{not json')",
                           (NOW,))
            else:
                db.execute("INSERT INTO messages (msg_id, topic, category, timestamp, envelope,"
                           " body) VALUES ('broken', 'org.debian.dev.dak.x', 'dak', %s,"
                           " '{not json', '')", (NOW,))
        dh.add(store, dak(3, "hebcal"))
        assert live.ids(1) == [3]  # row 2 skipped, the stream goes on
        page = httpx.get(url + "/")
        assert page.status_code == 200 and lines(page.text) == [3, 1]


def test_stream_resume_too_far_back_says_gap(store):
    dh.seed(store, 30, NOW)
    settled(store, Position(0, 0), 100, 30)
    with dh.serve(store, resume=10) as url:
        with stream(url + "/v2/stream", {"Last-Event-ID": "20"}) as near:
            assert near.ids(10) == list(range(21, 31))
        with stream(url + "/v2/stream", {"Last-Event-ID": "5"}) as far:
            assert far.next() == {"event": "gap", "data": "{}"}  # not a partial past
            dh.add(store, dak(31, "hebcal"))
            assert far.ids(1) == [31]


def test_shutdown_ends_open_streams_at_once(store):
    with dh.serve(store) as url:
        live = Stream(url + "/v2/stream")
        started = time.monotonic()
    took = time.monotonic() - started  # the server is down (serve joined its thread)
    assert live.next() == {"event": "closing", "data": "{}"}
    assert live.next() == {"closed": "1"}
    live.close()
    assert took < 5, took


def test_stream_limit_gives_503_and_frees_slots(store):
    with dh.serve(store, max_streams=2) as url, stream(url + "/v2/stream") as one, \
            stream(url + "/v2/stream"):
        with stream(url + "/v2/stream") as third:
            assert third.status == 503
            assert b"history.max_streams" in third.body
        one.close()
        deadline = time.monotonic() + 10
        while True:  # the slot is freed when the server sees the disconnect
            with stream(url + "/v2/stream") as again:
                if again.status == 200:
                    break
            assert time.monotonic() < deadline, "a closed stream kept its slot"
            time.sleep(0.1)


def test_a_slow_client_is_cut_off_and_never_slows_the_others(store):
    names = tuple(f"package-with-a-rather-long-name-{i:03d}-" + "x" * 60 for i in range(20))
    count = 2000
    with dh.serve(store, stream_queue=8) as url:
        host, port = url.removeprefix("http://").split(":")
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect((host, int(port)))
        slow.sendall(b"GET /v2/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        slow.settimeout(10)
        got = b""
        while b"retry:" not in got:  # registered; from here on it reads nothing
            got += slow.recv(100)
        with stream(url + "/v2/stream") as fast:
            started = time.monotonic()
            for first in range(1, count + 1, 500):
                dh.add(store, *(dh.envelope(n, BUG, {"bug": n, "package": "p"}, NOW,
                                            packages=names)
                                for n in range(first, first + 500)))
            assert fast.ids(count, timeout=30) == list(range(1, count + 1))
            took = time.monotonic() - started
        while chunk := slow.recv(65536):
            got += chunk
        slow.close()
    sent = len(re.findall(rb"id: [0-9-]+\n", got))  # PostgreSQL: positions, "xid-id"
    assert b"event: behind" in got, "the slow client was never cut off"
    assert sent < count, sent
    print(f"slow client: {sent} events before the cut; fast one: {count} in {took:.1f} s")
    assert took < 25, took


def test_stream_settings_are_checked(tmp_path):
    path = tmp_path / "busgate.toml"
    for key, bad in (("max_streams", 0), ("stream_queue", 0), ("stream_stall", 0),
                     ("stream_stall", 61), ("stream_keepalive", 0.5), ("stream_keepalive", 301),
                     ("stream_resume", 0), ("stream_resume", 100_001), ("chart_refresh", 4),
                     ("chart_refresh", 3601)):
        path.write_text(f"[history]\n{key} = {bad}\n")
        with pytest.raises(ConfigError) as err:
            config.load(path)
        assert err.value.key == f"history.{key}", (key, bad)
        assert str(bad) in str(err.value)
    path.write_text("[history]\nmax_streams = 3\nstream_queue = 16\nstream_stall = 0.25\n"
                    "stream_keepalive = 2\nstream_resume = 7\nchart_refresh = 30\n")
    assert web.limits(config.load(path).history) == {
        "max_page": 100, "max_values": 50, "max_streams": 3, "stream_queue": 16,
        "stall": 0.25, "keepalive": 2, "resume": 7, "chart_refresh": 30}
    defaults = config.HistorySettings()
    assert (defaults.stream_stall, defaults.stream_keepalive, defaults.stream_resume,
            defaults.chart_refresh) == (1.0, 15.0, 1000, 60.0)


def served_with(tmp_path, store: HistoryStore, toml: str):  # type: ignore[no-untyped-def]
    """``busgate web``'s app over ``store`` with ``[history]`` set as ``toml`` says."""
    path = tmp_path / "busgate.toml"
    path.write_text("[history]\n" + toml)
    return dh.serve(store, **web.limits(config.load(path).history))


def test_stream_keepalive_comes_after_the_configured_silence(tmp_path, store):
    with served_with(tmp_path, store, "stream_keepalive = 1\n") as url, \
            stream(url + "/v2/stream") as idle:
        started = time.monotonic()
        stamps = []
        for _ in range(3):
            assert idle.next(timeout=5) == {"comment": ": keep-alive"}
            stamps.append(time.monotonic() - started)
    gaps = [b - a for a, b in zip([0.0, *stamps], stamps, strict=False)]
    assert all(0.9 <= gap < 2.5 for gap in gaps), gaps  # 1 s, not 15 s, not sooner


def test_stream_resume_window_is_the_configured_one(tmp_path, store):
    dh.seed(store, 30, NOW)
    settled(store, Position(0, 0), 100, 30)
    with served_with(tmp_path, store, "stream_resume = 12\n") as url:
        with stream(url + "/v2/stream", {"Last-Event-ID": "18"}) as near:
            assert near.ids(12) == list(range(19, 31))  # 12 back: all of them
        with stream(url + "/v2/stream", {"Last-Event-ID": "17"}) as far:
            assert far.next() == {"event": "gap", "data": "{}"}  # 13 back: the gap


def test_a_full_stream_is_cut_after_the_configured_stall(tmp_path):
    """The poller gives a client whose queue is full ``stream_stall`` seconds, no less and
    not much more, then cuts it off: the bound on how long one reader delays the rest."""
    async def cut_after(stall: float) -> float:
        store = SqliteHistory(tmp_path / f"stall-{stall}.sqlite")
        feed = live.Broadcaster(store, lambda row: dashboard.event_of(
            dashboard.line_of(row, dh.index())), queue_size=2, poll=0.02, stall=stall)
        try:
            client, _, _ = await feed.open(live.parse_filter([], max_values=5), None)
            await asyncio.to_thread(dh.add, store, *(dak(n, "hebcal") for n in (1, 2, 3)))
            while not client.full():  # the queue fills; the third message waits on it
                await asyncio.sleep(0.005)
            full = time.monotonic()
            while client in feed.clients:
                await asyncio.sleep(0.005)
            took = time.monotonic() - full
            assert client.queue.get_nowait() is None  # cut: its queue ends, emptied
            return took
        finally:
            await feed.stop()
            store.close()

    for stall in (0.2, 1.5):
        took = asyncio.run(cut_after(stall))
        assert stall - 0.05 <= took < stall + 1.0, (stall, took)
