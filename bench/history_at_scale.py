"""Recorder ingest *at* a large history, trees side by side in one run (issue 14).

    .venv/bin/python bench/history_at_scale.py \\
        --db /var/tmp/busgate-bench-history/sqlite-1000000.sqlite \\
        --tree /work/base --tree . [--messages 30000] [--e2e 5000] [--rounds 3]

Why: bench/history.py times old against new ingest into fresh databases, and its 1M
figure is one tree's build; what issue 14 asks is the rate once a million messages are
stored (bigger indexes, a text index with more segments to merge into). Each tree gets
its own copy of ``--db`` (built by bench/history.py) and a worker process running that
tree's code; the workers take the same next messages chunk by chunk, alternately, so
both see the same load. Per tree: batched ingest (``Recorder.handle`` in the consumer's
batch transactions, as bench/history.py's ``BatchWriter``) wall and CPU messages/s, the
median chunk, then end to end (ZeroMQ PUB -> a real Recorder on the same copy),
rounds alternating; and a reader's query latency on each copy while its batches
commit. The 1-minute load average is printed beside the figures.

A tree whose text index fills behind the recorder in a thread (``<history>-index``,
008_index_file.sql) runs that thread throughout, woken after each commit as the
consumer wakes it; each figure is given until the last message is stored and until
the index has it too ("+index"): a chunk's reply waits for the index, so one tree's
indexing never runs in the other tree's turn, and CPU (all threads) holds the
indexer's. An older tree indexes in the batch's transaction: both figures are one.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
#: Longest a figure waits for the text index to catch up (then it is reported as is).
INDEX_TIMEOUT = 600.0
#: Added to the bench messages' seq_id/timestamp: the new messages follow the stored ones.
SEQ_OFFSET = 10_000_000
YEAR = 365 * 86400
#: What a reader asks while the batches commit (the /raw shapes: a topic page, contains).
READS = (("SELECT id, envelope FROM messages WHERE topic = ? ORDER BY timestamp DESC, id DESC"
          " LIMIT 25", ("org.debian.dev.git.branch.update",)),
         ("SELECT m.id, m.envelope FROM messages_text t JOIN messages m ON m.id = t.rowid"
          " WHERE messages_text MATCH ? ORDER BY t.rowid DESC LIMIT 25", ('"amd64"',)))
#: The contains read on a text index without positions (007_fts_detail_none.sql): the
#: term's trigrams, each candidate checked against its folded text, as the store reads.
READS_007 = (READS[0],
             ("SELECT m.id, m.envelope FROM messages_text t JOIN messages m ON m.id = t.rowid"
              " WHERE messages_text MATCH ? AND EXISTS (SELECT 1 FROM messages_fold f"
              " WHERE f.id = t.rowid AND instr(f.text, ?) > 0) ORDER BY t.rowid DESC LIMIT 25",
              ('"amd" AND "md6" AND "d64"', "amd64")))


def open_reader(history: Path) -> sqlite3.Connection:
    """A read-only connection to ``history`` that finds ``messages_text``: the index file
    attached as ``idx`` where there is one (008's layout), else the history's own table."""
    db = sqlite3.connect(f"file:{history}?mode=ro", uri=True, isolation_level=None)
    if Path(f"{history}-index").exists():
        try:
            from gateway.history.indexfile import attach
        except ImportError:  # this process runs a tree without it: the same attach
            db.execute("ATTACH DATABASE ? AS idx", (f"file:{history}-index?mode=ro",))
        else:
            attach(db, history)
    return db


def reads_of(db: sqlite3.Connection) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """:data:`READS` for the schema of ``db``'s text index (the history's, or the
    attached index file's)."""
    schemas = [row[1] for row in db.execute("PRAGMA database_list")]
    sql = ""
    for schema in ("main", "idx"):
        if schema in schemas:
            row = db.execute(f"SELECT sql FROM {schema}.sqlite_master"  # noqa: S608
                             " WHERE name = 'messages_text'").fetchone()
            if row:
                sql = row[0]
                break
    return READS_007 if "detail = none" in sql else READS


def wait_indexed(store: Any, started: float, timeout: float = INDEX_TIMEOUT) -> bool:
    """Until ``store``'s text index has every stored message (a tree without
    ``index_lag``, or one whose index is written with the message: at once); False if it
    had not within ``timeout`` seconds of ``started`` (perf_counter)."""
    index_lag = getattr(store, "index_lag", None)
    while index_lag is not None and index_lag() > 0:
        if time.perf_counter() - started > timeout:
            return False
        time.sleep(0.002)
    return True


def _envelopes(n: int, seed: int, publisher: str = "bench") -> list[dict[str, Any]]:
    """``n`` new bench messages, after the stored ones (``bench``'s seq_ids, a year on),
    or from another ``publisher`` (seq_id 1 up: the recorder follows it from its first)."""
    sys.path.insert(0, str(HERE.parent))
    import history_data as data

    out = []
    for envelope in data.envelopes(n, seed=seed):
        if publisher == "bench":
            envelope["seq_id"] += SEQ_OFFSET
        else:
            envelope["publisher"], envelope["publisher_epoch"] = publisher, publisher
        envelope["timestamp"] += YEAR
        out.append(envelope)
    return out


def worker(db: Path, total: int, seed: int, batch_ms: int | None,
           cache_mb: int | None) -> None:
    """Runs in a tree (its ``gateway`` first on sys.path); says ``{"ready": ...}`` once
    the store is open (migrated, its text index caught up), then answers commands on
    stdin: ``batch N`` (next N messages, batched) and ``e2e K`` (K over ZeroMQ), one JSON
    line each."""
    from gateway import config
    from gateway.consumer import Delivery
    from gateway.consumer_state import Position
    from gateway.history.recorder import Recorder
    from gateway.history.store import SqliteHistory
    from gateway.messages import TypeIndex

    root = db.parent / (db.stem + "-state")
    root.mkdir(exist_ok=True)
    history = "[history]\n" + ("" if batch_ms is None else f"batch_ms = {batch_ms}\n") \
        + ("" if cache_mb is None else f"cache_mb = {cache_mb}\n")
    (root / "busgate.toml").write_text(f'[state]\ndir = "{root}"\n{history}')
    settings = config.load(root / "busgate.toml")
    store = SqliteHistory(db, cache_mb=settings.history.cache_mb)
    recorder = Recorder(settings, store, index=TypeIndex(()), endpoints=[])
    position = Position(store.path)
    envelopes = iter(_envelopes(total, seed))
    e2e_round = 0
    # a tree with an index file: its thread follows the batches (Recorder.run starts it)
    start_indexer = getattr(store, "start_indexer", None)
    committed = getattr(store, "committed", None)
    print(json.dumps({"ready": start_indexer is not None}), flush=True)
    for line in sys.stdin:
        verb, count = line.split()
        n = int(count)
        if verb == "batch":
            if start_indexer is not None:
                start_indexer()  # (again after an e2e round: Recorder.run stops it)
            chunk = [next(envelopes) for _ in range(n)]
            wall, cpu = time.perf_counter(), time.process_time()
            dbc = position.db
            dbc.execute("BEGIN IMMEDIATE")
            for envelope in chunk:
                dbc.execute("SAVEPOINT callback")
                recorder.handle(Delivery(envelope, db=dbc, publisher="bench", batched=True))
                dbc.execute("RELEASE callback")
            recorder.flush(dbc)
            position.advance("bench", chunk[-1]["publisher_epoch"], chunk[-1]["seq_id"])
            dbc.execute("COMMIT")
            if committed is not None:
                committed()  # as the consumer's after_commit: wakes the indexer
            stored_wall, stored_cpu = time.perf_counter() - wall, time.process_time() - cpu
            done = wait_indexed(store, wall)
            reply = {"wall": stored_wall, "cpu": stored_cpu,
                     "wall_indexed": time.perf_counter() - wall,
                     "cpu_indexed": time.process_time() - cpu, "indexed": done}
        else:
            e2e_round += 1  # a new publisher each round: followed from its first message
            reply = _e2e(settings, store, _envelopes(n, seed + e2e_round, f"e2e-{e2e_round}"))
        print(json.dumps(reply), flush=True)
    position.close()
    store.close()  # (stops the indexer)


def _e2e(settings: Any, store: Any, envelopes: list[dict[str, Any]]) -> dict[str, float]:
    """``envelopes`` from a raw ZeroMQ PUB socket to a real Recorder on ``store``
    (its run starts and stops the text indexer of a tree that has one)."""
    import socket
    import threading

    import zmq

    from gateway import envelope as env
    from gateway.discovery import Endpoint
    from gateway.history.recorder import Recorder
    from gateway.messages import TypeIndex

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recorder = Recorder(settings, store, index=TypeIndex(()),
                        endpoints=[Endpoint("bench", f"tcp://127.0.0.1:{port}", None)])
    flushes = [0]
    flush = recorder.flush

    def counted(db: Any = None) -> None:  # batches, for their mean size
        flushes[0] += 1
        flush(db)

    recorder.flush = counted  # type: ignore[method-assign]
    frames = [env.encode(e) for e in envelopes]
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop,), daemon=True)
    thread.start()
    try:
        sent = 0
        while recorder.stored == 0 and sent < 50:  # the slow joiner
            pub.send_multipart(frames[sent])
            sent += 1
            time.sleep(0.05)
        first = recorder.stored
        wall, cpu = time.perf_counter(), time.process_time()
        for frame in frames[sent:]:
            pub.send_multipart(frame)
        want = len(frames) - sent
        deadline = time.monotonic() + 600
        while recorder.stored < first + want and time.monotonic() < deadline:
            time.sleep(0.005)
        stored_wall, stored_cpu = time.perf_counter() - wall, time.process_time() - cpu
        done = wait_indexed(store, wall)
        reply = {"wall": stored_wall, "cpu": stored_cpu,
                 "wall_indexed": time.perf_counter() - wall,
                 "cpu_indexed": time.process_time() - cpu, "indexed": done,
                 "n": recorder.stored - first, "batches": flushes[0]}
    finally:
        stop.set()
        thread.join(30)
        pub.close(linger=0)
    return reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, action="append", required=True,
                        help="the stored history (bench/history.py); one per --tree, in "
                             "order, when the trees' schemas differ (each copied first)")
    parser.add_argument("--tree", action="append", type=Path, required=True)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--e2e", type=int, default=5000, help="messages per e2e round")
    parser.add_argument("--rounds", type=int, default=3, help="e2e rounds per tree")
    parser.add_argument("--scratch", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--cache-mb", type=int, action="append",
                        help="history.cache_mb per --tree, in order (default: the tree's)")
    parser.add_argument("--batch-ms", type=int, default=None,
                        help="history.batch_ms of the e2e recorders (default: the tree's); "
                             "a loaded machine makes the default's batches small")
    args = parser.parse_args()
    if args.worker:
        worker(args.db[0], args.messages, args.seed, args.batch_ms,
               args.cache_mb[0] if args.cache_mb else None)
        return
    scratch = Path(tempfile.mkdtemp(prefix="bg-at-scale-", dir=args.scratch))
    workers = []
    try:
        for number, tree in enumerate(args.tree):
            tree = tree.resolve()
            copy = scratch / f"tree{number}.sqlite"
            source = args.db[number if len(args.db) > 1 else 0]
            # its index file too (else a new tree's worker fills one again first)
            for suffix in ("", "-wal", "-index", "-index-wal"):
                if Path(str(source) + suffix).exists():
                    shutil.copyfile(str(source) + suffix, str(copy) + suffix)
            env = {**os.environ, "PYTHONPATH": str(tree)}
            workers.append(subprocess.Popen(
                [str(tree / ".venv/bin/python"), str(HERE), "--worker", "--db", str(copy),
                 "--tree", str(tree), "--messages", str(args.messages), "--e2e",
                 str(args.e2e), "--rounds", str(args.rounds), "--seed", str(args.seed),
                 *([] if args.batch_ms is None else ["--batch-ms", str(args.batch_ms)]),
                 *([] if not args.cache_mb else ["--cache-mb", str(args.cache_mb[number])])],
                cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for proc in workers:  # each copy migrated and indexed before any reader opens it
            json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        print(f"at-scale ingest from {', '.join(d.name for d in args.db)}: "
              f"{args.messages:,} messages in chunks of "
              f"{args.chunk}, trees {', '.join(str(t) for t in args.tree)}, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)

        readers = [open_reader(scratch / f"tree{i}.sqlite") for i in range(len(workers))]
        read_ms: dict[int, list[float]] = {i: [] for i in range(len(workers))}
        reads_by = [reads_of(reader) for reader in readers]

        def ask(index: int, command: str, reads: bool = False) -> dict[str, float]:
            """``command`` to a worker; with ``reads``, queries on its copy meanwhile
            (a reader's latency while that tree's batches commit)."""
            proc = workers[index]
            proc.stdin.write(command + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            turn = 0
            while reads and not select.select([proc.stdout], [], [], 0)[0]:
                sql, params = reads_by[index][turn % len(READS)]
                turn += 1
                started = time.perf_counter()
                readers[index].execute(sql, params).fetchall()
                read_ms[index].append((time.perf_counter() - started) * 1000)
                time.sleep(0.01)
            return json.loads(proc.stdout.readline())  # type: ignore[union-attr]

        results: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(workers))}
        for step in range(args.messages // args.chunk):
            order = list(range(len(workers)))
            if step % 2:
                order.reverse()
            for index in order:
                results[index].append(ask(index, f"batch {args.chunk}", reads=True))
        e2e: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(workers))}
        for step in range(args.rounds if args.e2e else 0):
            order = list(range(len(workers)))
            if step % 2:
                order.reverse()
            for index in order:
                e2e[index].append(ask(index, f"e2e {args.e2e}"))
        print(f"{'tree':<28}{'until':>7}{'batched wall/s':>15}{'CPU/s':>9}{'median chunk/s':>16}"
              f"{'e2e wall/s (median)':>21}{'e2e CPU/s':>11}{'batch':>8}")
        base: dict[str, dict[str, float]] = {}
        for index, tree in enumerate(args.tree):
            rows, runs = results[index], e2e[index]
            n = args.chunk * len(rows)
            batches = sum(r["batches"] for r in runs)
            sizes = f"{sum(r['n'] for r in runs) / batches:.0f}" if batches else "-"
            late = sum(not r.get("indexed", True) for r in rows + runs)
            for until, suffix in (("stored", ""), ("+index", "_indexed")):
                def of(r: dict[str, float], key: str, suffix: str = suffix) -> float:
                    return r.get(key + suffix, r[key])  # an older worker: stored only

                figures = {
                    "wall": n / sum(of(r, "wall") for r in rows),
                    "cpu": n / sum(of(r, "cpu") for r in rows),
                    "median": statistics.median(args.chunk / of(r, "wall") for r in rows),
                    "e2e": statistics.median([r["n"] / of(r, "wall") for r in runs]
                                             or [float("nan")]),
                    "e2e_cpu": statistics.median([r["n"] / of(r, "cpu") for r in runs]
                                                 or [float("nan")])}
                first = base.setdefault(until, figures)
                print(f"{str(tree)[-27:] if until == 'stored' else '':<28}{until:>7}"
                      f"{figures['wall']:>15,.0f}{figures['cpu']:>9,.0f}"
                      f"{figures['median']:>16,.0f}{figures['e2e']:>21,.0f}"
                      f"{figures['e2e_cpu']:>11,.0f}{sizes if until == 'stored' else '':>8}"
                      + ("" if figures is first else "   x" + " x".join(
                          f"{figures[k] / first[k]:.2f}" for k in figures))
                      + (f"  ({late} not indexed within {INDEX_TIMEOUT:.0f} s)"
                         if late and until == "+index" else ""))
        for index, tree in enumerate(args.tree):
            times = sorted(read_ms[index])
            if times:
                print(f"reads during its batches, {str(tree)[-27:]}: {len(times)} queries "
                      f"(topic, contains), p50 {statistics.median(times):.1f} ms, p99 "
                      f"{times[min(len(times) - 1, int(0.99 * len(times)))]:.1f} ms")
        for reader in readers:
            reader.close()
        print(f"load {os.getloadavg()[0]:.1f}")
    finally:
        for proc in workers:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(60)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
