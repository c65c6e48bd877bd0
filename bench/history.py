"""History at 1,000,000 messages (issue 14's figures): recorder ingest and ``/raw`` reads.

    .venv/bin/python bench/history.py [--messages N] [--backend sqlite --backend postgresql]
        [--cache DIR] [--sample M] [--e2e K] [--runs R]

What it does, per backend (side by side in one run):

1. builds (or reuses from ``--cache``) a history of N realistic messages
   (bench/history_data.py: the adapters' golden events, Zipf-skewed packages/users,
   a year of timestamps) through the recorder's write path in its batches
   (``Recorder.handle`` on deliveries inside one transaction per ``history.batch_messages``,
   a savepoint per message as the consumer takes, the text flushed and the position
   moved at the end), and times it;
2. ingest old vs new, interleaved chunk by chunk in one run (same load): the old
   per-message transaction (``Recorder.handle`` without a batch) against the batched path,
   each into a fresh database;
3. end to end: K envelopes published on a raw ZeroMQ PUB socket, recorded by a real
   ``Recorder`` (subscriber, consumer, batches), messages/s from first publish to last stored;
4. ``/raw`` over real HTTP (uvicorn on 127.0.0.1, httpx): p50/p99 of R requests each for
   topic, user, package, one-day time range, ``contains`` (frequent and rare terms), and
   combined kinds (a name with a topic; a frequent ``contains`` term with a user, package,
   topic or category), and ``/`` time to last byte when the app has a dashboard (skipped
   when it answers 404).

The 1-minute load average is printed beside the figures.

Since 008 the SQLite text index is a file of its own (``<history>-index``) that a thread
fills behind the recorder's batches: the bench runs that thread where the store has
one, wakes it after each commit its writers make (as the consumer does), and gives the
SQLite ingest figures until the last message is stored and until the index has it
too (CPU: process time, all threads). The "before" arm writes main's own FTS5 table,
links and per-day counts in the history, in the message's transaction, as main did
(made in its fresh history since 008 moved them out), so its two figures are one.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import history_data as data  # noqa: E402
from harness import pct  # noqa: E402 (history_trees and dashboard_paint import it from here)
from history_at_scale import wait_indexed  # noqa: E402

from gateway import config  # noqa: E402
from gateway.consumer import Delivery  # noqa: E402
from gateway.consumer_state import Position  # noqa: E402
from gateway.history.recorder import Recorder  # noqa: E402
from gateway.history.store import SqliteHistory  # noqa: E402
from gateway.messages import TypeIndex  # noqa: E402

DEFAULT_CACHE = Path(os.environ.get("TMPDIR", "/var/tmp")) / "busgate-bench-history"


def bench_settings(root: Path) -> config.Settings:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "busgate.toml"
    path.write_text(f'[state]\ndir = "{root / "var"}"\n')
    return config.load(path)


# -- the recorder's write path -------------------------------------------------------------
class BatchWriter:
    """The recorder's write path as ``busgate record`` runs it, without the network:
    ``Recorder.handle`` per delivery, in the consumer's transactions; with ``indexer``,
    the store's text index thread (a store with one) runs behind them, woken after each
    commit as the consumer's ``after_commit`` wakes it."""

    def __init__(self, settings: config.Settings, store: SqliteHistory, indexer: bool = True):
        self.store = store
        self.recorder = Recorder(settings, store, index=TypeIndex(()), endpoints=[])
        self.position = Position(store.path)
        self.db = self.position.db
        start = getattr(store, "start_indexer", None) if indexer else None
        if start is not None:
            start()
        self.committed = getattr(store, "committed", None) if start else None

    def _committed(self) -> None:
        if self.committed is not None:
            self.committed()

    def batched(self, envelopes: list[dict[str, Any]]) -> None:
        """One batch: BEGIN, a savepoint per message (Consumer.run), the staged batch
        written and the position moved at the end (Consumer._commit), COMMIT."""
        db, handle = self.db, self.recorder.handle
        db.execute("BEGIN IMMEDIATE")
        for envelope in envelopes:
            db.execute("SAVEPOINT callback")
            handle(Delivery(envelope, db=db, publisher="bench", batched=True))
            db.execute("RELEASE callback")
        self.recorder.flush(db)
        last = envelopes[-1]
        self.position.advance("bench", last["publisher_epoch"], last["seq_id"])
        db.execute("COMMIT")
        self._committed()

    def one_by_one(self, envelopes: list[dict[str, Any]]) -> None:
        """The old path: a transaction per message (Consumer._in_transaction)."""
        db, handle = self.db, self.recorder.handle
        for envelope in envelopes:
            db.execute("BEGIN IMMEDIATE")
            db.execute("SAVEPOINT callback")
            handle(Delivery(envelope, db=db, publisher="bench"))
            db.execute("RELEASE callback")
            self.position.advance("bench", envelope["publisher_epoch"], envelope["seq_id"])
            db.execute("COMMIT")
            self._committed()

    def before(self, envelopes: list[dict[str, Any]]) -> None:
        """main's path before this work, for the side-by-side figure: a transaction per
        message and main's ``SqliteHistory.add`` (RETURNING, a name read per name, the
        text and links written in the transaction: :func:`main_tables`)."""
        from gateway.history.records import record_of

        db, index = self.db, self.recorder.index
        for envelope in envelopes:
            db.execute("BEGIN IMMEDIATE")
            db.execute("SAVEPOINT callback")
            _main_add(db, record_of(envelope, index))
            db.execute("RELEASE callback")
            self.position.advance("bench", envelope["publisher_epoch"], envelope["seq_id"])
            db.execute("COMMIT")

    def close(self) -> None:
        self.position.close()


def main_tables(store: SqliteHistory) -> None:
    """Give a fresh history what main's ``add`` writes where it has none (since 008 they
    are in the index file): the text index (001_initial.sql's), the user and package
    links and their per-day counts, kept by insert triggers as 003/004 made them; so the
    "before" arm writes what main wrote, in the message's transaction."""
    db = store.writer()
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_text'").fetchone():
        db.execute("CREATE VIRTUAL TABLE messages_text USING fts5 (body, content = '',"
                   " tokenize = 'trigram')")
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'user_messages'").fetchone():
        return
    from gateway.history.indexfile import DAY, KINDS

    day = DAY.format(ts="NEW.timestamp")
    for _, link, key, days in KINDS:
        db.execute(f"CREATE TABLE {link} ({key} INTEGER NOT NULL, timestamp REAL NOT NULL,"
                   f" message_id INTEGER NOT NULL, PRIMARY KEY ({key}, timestamp, message_id))"
                   " WITHOUT ROWID")
        db.execute(f"CREATE INDEX {link}_message ON {link} (message_id)")
        db.execute(f"CREATE TABLE {days} (day INTEGER NOT NULL, {key} INTEGER NOT NULL,"
                   f" messages INTEGER NOT NULL, PRIMARY KEY (day, {key})) WITHOUT ROWID")
        db.execute(f"CREATE TRIGGER {days}_insert AFTER INSERT ON {link}"  # noqa: S608
                   " WHEN NOT EXISTS (SELECT 1 FROM rollups_deferred) BEGIN"
                   f" INSERT INTO {days} (day, {key}, messages) VALUES ({day}, NEW.{key}, 1)"
                   f" ON CONFLICT (day, {key}) DO UPDATE SET messages = messages + 1; END")


def _main_add(db: Any, record: Any) -> bool:
    """``SqliteHistory.add`` as main has it (commit fc9fd7e), the "before" of the figure."""
    row = db.execute(
        "INSERT INTO messages (msg_id, topic, category, timestamp, publisher, seq_id,"
        " envelope) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        " RETURNING id",
        (record.msg_id, record.topic, record.category, record.timestamp,
         record.publisher, record.seq_id, record.envelope)).fetchone()
    if row is None:
        return False
    message_id = row[0]
    db.execute("INSERT INTO messages_text (rowid, body) VALUES (?, ?)",
               (message_id, record.text))
    for table, link, key, names in (("users", "user_messages", "user_id", record.users),
                                    ("packages", "package_messages", "package_id",
                                     record.packages)):
        for name in names:
            found = db.execute(f"SELECT id FROM {table} WHERE name = ?",  # noqa: S608
                               (name,)).fetchone()
            name_id = found[0] if found else db.execute(
                f"INSERT INTO {table} (name) VALUES (?) RETURNING id",  # noqa: S608
                (name,)).fetchone()[0]
            db.execute(f"INSERT OR IGNORE INTO {link} ({key}, timestamp, message_id)"  # noqa: S608
                       " VALUES (?, ?, ?)", (name_id, record.timestamp, message_id))
    return True


def chunks(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


#: The files of one history: its own, its text index's (008), each with its log.
FILES = ("", "-wal", "-shm", "-index", "-index-wal", "-index-shm")


def build_sqlite(path: Path, n: int, settings: config.Settings) -> dict[str, float]:
    """The cached database of ``n`` messages (built when missing, its text index file
    beside it); build figures: messages/s until stored (overall, the last 100,000) and
    until indexed, CPU µs a message until indexed."""
    if path.exists():
        store = SqliteHistory(path)
        try:
            if store.count() == n:
                return {}
        finally:
            store.close()
        for suffix in FILES:
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    partial = path.with_suffix(".partial")
    for stale in partial.parent.glob(partial.name + "*"):
        stale.unlink()
    store = SqliteHistory(partial, cache_mb=settings.history.cache_mb)
    writer = BatchWriter(settings, store)
    started, cpu = time.perf_counter(), time.process_time()
    last_started, last_count, done = started, 0, 0
    for batch in chunks(data.envelopes(n), settings.history.batch_messages):
        if n - done <= 100_000 and last_count == 0:
            last_started = time.perf_counter()
        writer.batched(batch)
        done += len(batch)
        if n - done < 100_000:
            last_count += len(batch)
        if done % 100_000 == 0:
            print(f"  built {done:,} ({done / (time.perf_counter() - started):,.0f}/s, "
                  f"load {os.getloadavg()[0]:.1f})", flush=True)
    elapsed = time.perf_counter() - started
    last = time.perf_counter() - last_started
    if not wait_indexed(store, started, timeout=3600):
        print("  the text index was not caught up within an hour", flush=True)
    indexed, cpu = time.perf_counter() - started, time.process_time() - cpu
    writer.close()
    store.close()
    for suffix in FILES:  # the index file keeps its history's identity across the rename
        src = Path(str(partial) + suffix)
        if src.exists():
            src.rename(str(path) + suffix)
    return {"build": n / elapsed, "build_last_100k": last_count / last if last else 0.0,
            "build_indexed": n / indexed, "build_cpu_us": cpu / n * 1e6}


def ingest_side_by_side(root: Path, n: int, settings: config.Settings
                        ) -> dict[str, dict[str, float]]:
    """main's path, a transaction per message, and batched: alternating chunks (same
    load), each into a fresh SQLite database. Arm -> messages/s until stored
    (``stored``) and until indexed (``indexed``), CPU µs a message until indexed
    (``cpu_us``). Each chunk waits for its arm's index: an arm's indexer thread does
    not run in another arm's time (the idle ones poll every 0.1 s)."""
    envelopes = list(data.envelopes(n, seed=99))
    names = ("before", "per_message", "batched")
    spent = {name: {"stored": 0.0, "indexed": 0.0, "cpu": 0.0} for name in names}
    writers = {}
    for name in names:
        store = SqliteHistory(root / f"ingest-{name}.sqlite", cache_mb=settings.history.cache_mb)
        if name == "before":
            main_tables(store)
        writers[name] = BatchWriter(settings, store, indexer=name != "before")
    size = settings.history.batch_messages
    for index, chunk in enumerate(chunks(iter(envelopes), size)):
        order = list(names)[index % 3:] + list(names)[:index % 3]
        for name in order:
            writer = writers[name]
            started, cpu = time.perf_counter(), time.process_time()
            {"before": writer.before, "per_message": writer.one_by_one,
             "batched": writer.batched}[name](chunk)
            spent[name]["stored"] += time.perf_counter() - started
            wait_indexed(writer.store, started)
            spent[name]["indexed"] += time.perf_counter() - started
            spent[name]["cpu"] += time.process_time() - cpu
    for writer in writers.values():
        assert writer.store.count() == n, "ingest lost or doubled messages"
        writer.close()
        writer.store.close()
    return {name: {"stored": n / t["stored"], "indexed": n / t["indexed"],
                   "cpu_us": t["cpu"] / n * 1e6} for name, t in spent.items()}


def end_to_end(root: Path, k: int, backend: str = "sqlite") -> tuple[float, float]:
    """K envelopes from a raw ZeroMQ PUB socket to a real Recorder (its run starts and
    stops the text index thread); messages/s until stored and until indexed."""
    import zmq

    from gateway import envelope as env
    from gateway.discovery import Endpoint

    port = _free_port()
    settings = bench_settings(root / f"e2e-{backend}")
    store: Any = SqliteHistory(root / f"e2e-{backend}" / "history.sqlite") \
        if backend == "sqlite" else _fresh_pg(root)
    recorder = Recorder(settings, store, index=TypeIndex(()),
                        endpoints=[Endpoint("bench", f"tcp://127.0.0.1:{port}", None)])
    frames = [env.encode(e) for e in data.envelopes(k + 50, seed=7)]
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)  # nothing dropped while the recorder catches up
    pub.bind(f"tcp://127.0.0.1:{port}")
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop,), daemon=True)
    thread.start()
    try:
        sent = 0
        deadline = time.monotonic() + 30
        while recorder.stored == 0 and time.monotonic() < deadline:  # the slow joiner
            pub.send_multipart(frames[sent])
            sent += 1
            time.sleep(0.05)
        if recorder.stored == 0:
            raise SystemExit("the recorder never received a message")
        first = recorder.stored
        started = time.perf_counter()
        for frame in frames[sent:sent + k]:
            pub.send_multipart(frame)
        deadline = time.monotonic() + 300
        while recorder.stored < first + k and time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        got = recorder.stored - first
        if not wait_indexed(store, started, timeout=300):
            raise SystemExit("end to end: the text index was not caught up in 300 s")
        indexed = time.perf_counter() - started
    finally:
        stop.set()
        thread.join(30)
        pub.close(linger=0)
        store.close()
    if got < k:
        raise SystemExit(f"end to end: {got} of {k} recorded")
    return k / elapsed, k / indexed


def _fresh_pg(root: Path) -> Any:
    """A new, empty PostgreSQL history (database ``busgate_bench_e2e``, dropped first)."""
    import psycopg

    from gateway.history.backends import open_history_url

    base = os.environ.get("BUSGATE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/"
                                                    "postgres")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS busgate_bench_e2e")
        conn.execute("CREATE DATABASE busgate_bench_e2e")
    return open_history_url(base.rsplit("/", 1)[0] + "/busgate_bench_e2e", 30.0)


def _create_database(url: str) -> None:
    """Create ``url``'s database when the server lacks it (a fresh machine's first run)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = conninfo_to_dict(url).get("dbname")
    admin = make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if name and conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                 (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- reads over HTTP ---------------------------------------------------------------------
@contextmanager
def serve(store: Any) -> Iterator[str]:
    import uvicorn

    from gateway.history.web import make_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(store), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


#: The span of the name pages' queries (``/user/NAME``: a month).
MONTH = 30 * 86400


def query_makers(n: int) -> dict[str, Callable[[random.Random], list[tuple[str, str]]]]:
    """Each query kind: a function drawing one request's parameters (skewed like traffic:
    popular names come up more often, as people look for them more)."""
    topics = sorted({t["topic"] for ts in data.templates().values() for t in ts})
    start = data.END - data.YEAR
    frequent = ("unstable", "debian.org", "amd64", "Maintainer")
    categories = sorted({t.split(".")[0] for t in (topic.removeprefix(data.PREFIX + ".")
                                                    for topic in topics)})

    def zipf(rng: random.Random, size: int) -> int:
        return min(size - 1, int(size ** rng.random()) - 1)

    def window(rng: random.Random, span: float) -> list[tuple[str, str]]:
        first = start + rng.random() * (data.YEAR - span)
        return [("start", str(first)), ("end", str(first + span))]

    return {
        "topic": lambda rng: [("topic", rng.choice(topics))],
        "user": lambda rng: [("user", data.user_name(zipf(rng, data.USERS)))],
        "package": lambda rng: [("package", data.package_name(zipf(rng, data.PACKAGES)))],
        # /user/NAME and /package/NAME: a name's month (the time on its links)
        "user (30 days)": lambda rng: [("user", data.user_name(zipf(rng, data.USERS))),
                                       *window(rng, MONTH)],
        "package (30 days)": lambda rng: [
            ("package", data.package_name(zipf(rng, data.PACKAGES))), *window(rng, MONTH)],
        "time range (1 day)": lambda rng: window(rng, 86400),
        "contains (frequent)": lambda rng: [("contains", rng.choice(frequent))],
        "contains (rare)": lambda rng: [("contains", data.package_name(
            data.PACKAGES - 1 - rng.randrange(1000)))],
        # a name with a topic: the count reads every link of the name and its message's
        # row until count_limit match (a frequent user with a rare topic: all of them)
        "user + topic": lambda rng: [("user", data.user_name(zipf(rng, data.USERS))),
                                     ("topic", rng.choice(topics))],
        "package + topic": lambda rng: [
            ("package", data.package_name(zipf(rng, data.PACKAGES))),
            ("topic", rng.choice(topics))],
        # contains with another filter (last, so the kinds above draw as before): the
        # term's matches and the other filter's index intersected (a frequent term with
        # a rare name: few of its matches are the name's)
        "contains + user": lambda rng: [("contains", rng.choice(frequent)),
                                        ("user", data.user_name(zipf(rng, data.USERS)))],
        "contains + package": lambda rng: [
            ("contains", rng.choice(frequent)),
            ("package", data.package_name(zipf(rng, data.PACKAGES)))],
        "contains + topic": lambda rng: [("contains", rng.choice(frequent)),
                                         ("topic", rng.choice(topics))],
        "contains + category": lambda rng: [("contains", rng.choice(frequent)),
                                            ("category", rng.choice(categories))],
        # exclusions (a GIN index has no "not equal"): a frequent term without some
        # categories, or without every topic of some (empty answers among them)
        "contains + not_category": lambda rng: [
            ("contains", rng.choice(frequent)),
            *(("not_category", c) for c in rng.sample(categories,
                                                      rng.randint(1, len(categories) - 1)))],
        "contains + not_topic": lambda rng: [
            ("contains", rng.choice(frequent)),
            *(("not_topic", t) for c in rng.sample(categories,
                                                   rng.randint(1, len(categories) - 1))
              for t in topics if t.removeprefix(data.PREFIX + ".").startswith(c + "."))],
    }


def reads(store: Any, n: int, runs: int) -> dict[str, tuple[float, float, int]]:
    """Kind -> (p50 ms, p99 ms, HTTP errors)."""
    import httpx

    rng = random.Random(5)
    out: dict[str, tuple[float, float, int]] = {}
    with serve(store) as base, httpx.Client(base_url=base, timeout=60) as client:
        client.get("/raw", params={"rows_per_page": 1})  # warm the connection
        for kind, make in query_makers(n).items():
            times, errors = [], 0
            for _ in range(runs):
                params = make(rng)
                started = time.perf_counter()
                response = client.get("/raw", params=params)
                times.append((time.perf_counter() - started) * 1000)
                errors += response.status_code != 200
            out[kind] = (pct(times, 0.5), pct(times, 0.99), errors)
        first = client.get("/")
        if first.status_code != 404:
            times = []
            for _ in range(max(5, runs // 10)):
                started = time.perf_counter()
                client.get("/").read()
                times.append((time.perf_counter() - started) * 1000)
            out["/ time to last byte"] = (pct(times, 0.5), pct(times, 0.99), 0)
    return out


def open_backend(backend: str, cache: Path, n: int, settings: config.Settings
                 ) -> tuple[Any, dict[str, float]]:
    """The store of ``backend`` holding ``n`` bench messages (built or reused)."""
    if backend == "sqlite":
        path = cache / f"sqlite-{n}.sqlite"
        figures = build_sqlite(path, n, settings)
        return SqliteHistory(path, query_timeout=30), figures
    try:
        from gateway.history.backends import open_history_url
    except ImportError:
        raise SystemExit("--backend postgresql needs gateway.history.backends (branch "
                         "pghistory); not on this branch") from None
    url = os.environ.get("BUSGATE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/"
                                             "busgate_bench_history")
    _create_database(url)
    store = open_history_url(url, 30.0, create=True)
    figures: dict[str, float] = {}
    have = store.count()
    if have != n:
        from gateway.history.records import record_of

        if have > n:
            raise SystemExit(f"{url} holds {have:,} messages, more than {n:,}: drop it")
        index = TypeIndex(())
        started = time.perf_counter()
        done = 0
        for batch in chunks(data.envelopes(n), 10_000):  # the store's own write path
            done += len(batch)
            if done > have:  # the first `have` were stored by an earlier run
                store.add_many(record_of(e, index) for e in batch)
            if done % 50_000 == 0:
                print(f"  built {done:,} ({(done - have) / (time.perf_counter() - started):,.0f}"
                      f"/s, load {os.getloadavg()[0]:.1f})", flush=True)
        figures["build"] = (n - have) / (time.perf_counter() - started)
        _vacuum_analyze(url)
    return store, figures


def _vacuum_analyze(url: str) -> None:
    """What autovacuum does after a bulk load (fresh planner statistics, a visibility
    map for index-only scans), done now so the reads are not timed against a stale plan."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="where built databases are kept for the next run")
    parser.add_argument("--sample", type=int, default=20_000,
                        help="messages of the old/new ingest comparison")
    parser.add_argument("--e2e", type=int, default=5_000,
                        help="messages of the ZeroMQ end-to-end figure (0: skip)")
    parser.add_argument("--e2e-only", action="store_true",
                        help="stop after the ingest figures (no 1M build, no reads)")
    parser.add_argument("--runs", type=int, default=100, help="requests per query kind")
    parser.add_argument("--pg-messages", type=int, default=None,
                        help="messages for PostgreSQL (default --messages; its write path "
                             "is slower: a smaller history is quicker to build)")
    args = parser.parse_args()
    backends = args.backend or ["sqlite"]
    args.cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bg-bench-history-"))
    settings = bench_settings(scratch)
    print(f"history bench: {args.messages:,} messages, backends {', '.join(backends)}, "
          f"load {os.getloadavg()[0]:.1f}")
    try:
        rates = ingest_side_by_side(scratch, args.sample, settings)
        print(f"SQLite ingest through the recorder, {args.sample:,} messages each, "
              f"interleaved (load {os.getloadavg()[0]:.1f}):\n"
              f"  {'':<42}{'stored':>9}{'indexed':>10}{'CPU µs':>8}")
        for name, label in (("before", "before (main: a transaction per message)"),
                            ("per_message", "a transaction per message (new add)"),
                            ("batched", f"batched ({settings.history.batch_messages}"
                                        " a transaction)")):
            rate = rates[name]
            print(f"  {label:<42}{rate['stored']:>7,.0f}/s{rate['indexed']:>8,.0f}/s"
                  f"{rate['cpu_us']:>8.0f}" + ("" if name == "before" else
                  f"  = x{rate['stored'] / rates['before']['stored']:.2f}"
                  f" / x{rate['indexed'] / rates['before']['indexed']:.2f} of before"))
        for backend in backends if args.e2e else []:
            stored, indexed = end_to_end(scratch, args.e2e, backend)
            print(f"end to end ZeroMQ PUB -> recorder ({backend}), {args.e2e:,} messages: "
                  f"{stored:,.0f}/s until stored, {indexed:,.0f}/s until indexed "
                  f"(load {os.getloadavg()[0]:.1f})")
        if args.e2e_only:
            return
        results: dict[str, dict[str, tuple[float, float, int]]] = {}
        sizes = {b: args.messages if b == "sqlite" or args.pg_messages is None
                 else args.pg_messages for b in backends}
        for backend in backends:
            store, figures = open_backend(backend, args.cache, sizes[backend], settings)
            if figures:
                print(f"{backend}: built {sizes[backend]:,} in batches: "
                      f"{figures['build']:,.0f}/s overall"
                      + (f", {figures['build_last_100k']:,.0f}/s over the last 100,000"
                         if figures.get("build_last_100k") else "")
                      + (f"; until indexed {figures['build_indexed']:,.0f}/s,"
                         f" {figures['build_cpu_us']:.0f} CPU µs a message"
                         if "build_indexed" in figures else ""))
            else:
                print(f"{backend}: reusing {sizes[backend]:,} cached messages")
            try:
                results[backend] = reads(store, args.messages, args.runs)
            finally:
                store.close()
        print(f"\n/raw over HTTP, {args.runs} requests each (ms, p50 / p99), load "
              f"{os.getloadavg()[0]:.1f}")
        print(f"{'query':<24}" + "".join(f"{f'{b} {sizes[b]:,}':>22}" for b in backends))
        for kind in results[backends[0]]:
            row = f"{kind:<24}"
            for backend in backends:
                p50, p99, errors = results[backend].get(kind, (float("nan"),) * 2 + (0,))
                row += f"{p50:>9.1f} / {p99:>7.1f}" + (f" ({errors} err)" if errors else "    ")
            print(row)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
