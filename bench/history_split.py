"""Issue 14's next design, costed before it is built: the recorder stores messages and a
second process indexes them (user/package links, text), each on a core of its own.

    .venv/bin/python bench/history_split.py --db /var/tmp/bgbench/sqlite-1000000-006.sqlite \\
        [--messages 40000] [--chunk 1000] [--rounds 2] [--scratch /var/tmp]

Why: at 1,000,000 stored, the text index and the links are about half of a batch's CPU
(bench/history_ablation.py variants b and g), all of it on the recorder's one core
while a 2-core machine's other core idles. Here, on copies of one stored history (this
tree's code, its schema):

    together  the recorder as it is: ``Recorder.handle`` in batch transactions of
              ``--chunk`` (bench/history_at_scale.py's worker), one process.
    split     the same recorder with its text and link inserts taken out, and an
              indexer process following it: it reads the rows the recorder committed
              (by id, a read-only connection), types their envelopes again
              (``record_of``) and writes their links and text into a file of its own
              that holds the million messages' links and text index already (a copy).
    handover  as split, but the recorder hands the indexer what it already computed:
              its batch appends the links and text to queue tables (rowid order, in the
              batch's transaction), and the indexer copies them across (its file has the
              recorder's attached, read-only) in set-based statements: no Python per row.

Both arms take the same next messages, round by round, alternately. Per arm: the
recorder's wall and CPU messages/s; for split, the indexer's CPU µs a message, how
many it had still to index when the recorder's last batch committed, and the time it
then took to catch up. The split design's ingest is the rate both keep up with:
messages / (recorder's wall + catch-up). Not a test: it prints figures.

Since 008 the recorder already keeps the text index apart: a thread of its process
fills ``<history>-index`` from ``messages_fold`` behind its batches. So ``together`` is
now that (each batch waits for its index: its "both keep up" and CPU hold the thread's
work), and split and handover take the folded-text insert out of the recorder too
(its thread then has nothing to index): their indexer writes the text into the index
file copied beside its file (attached as ``text``). What is left to cost is mainly
moving the links out of the recorder's process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from history_ablation import NO_LINK, NO_TEXT  # noqa: E402
from history_at_scale import worker as recorder_worker  # noqa: E402

#: Rows the indexer reads and writes per transaction (at most).
INDEX_CHUNK = 2000
#: Seconds the indexer sleeps when it has caught up.
IDLE = 0.01


#: The handover arm's queues, in the recorder's file: what its batches append.
QUEUES = ("CREATE TABLE IF NOT EXISTS bench_text_q (id INTEGER PRIMARY KEY, body TEXT)",
          "CREATE TABLE IF NOT EXISTS bench_user_q (user_id, timestamp, message_id)",
          "CREATE TABLE IF NOT EXISTS bench_package_q (package_id, timestamp, message_id)")


def split_recorder(db: Path, total: int, seed: int, handover: bool) -> None:
    """bench/history_at_scale.py's worker without text or link writes (``handover``:
    appended to the queues instead)."""
    from gateway.history import store as store_module

    with sqlite3.connect(db) as conn:
        for sql in (*QUEUES, "CREATE TABLE IF NOT EXISTS bench_no_text (body)"):
            conn.execute(sql)
    # the folded text: since 008 what the recorder writes of the text (the index is filled
    # from it by its thread)
    if handover:
        store_module._INSERT_FOLD = "INSERT INTO bench_text_q (id, body) VALUES (?, ?)"  # type: ignore[attr-defined]
        store_module._LINK = {  # type: ignore[attr-defined]
            "users": "INSERT INTO bench_user_q VALUES (?, ?, ?)",
            "packages": "INSERT INTO bench_package_q VALUES (?, ?, ?)"}
    else:
        store_module._INSERT_FOLD = NO_TEXT  # type: ignore[attr-defined]
        store_module._LINK = dict.fromkeys(store_module._LINK, NO_LINK)  # type: ignore[attr-defined]
    recorder_worker(db, total, seed, None, None)


def open_index(index: Path) -> sqlite3.Connection:
    """The indexer's file, with the text index file copied beside it (008) attached as
    ``text``: the unqualified ``messages_text`` is found there."""
    out = sqlite3.connect(index, isolation_level=None)
    out.execute("PRAGMA journal_mode=WAL")
    out.execute("PRAGMA synchronous=NORMAL")
    out.execute("PRAGMA cache_size=-65536")
    out.execute("PRAGMA wal_autocheckpoint=40000")
    if Path(f"{index}-index").exists():
        out.execute("ATTACH DATABASE ? AS idx", (f"{index}-index",))
        out.execute("PRAGMA text.synchronous=NORMAL")
    return out


def copier(source: Path, index: Path, stop: Path) -> None:
    """The handover arm's indexer: copy the queues' new rows into ``index`` until
    ``stop`` exists and none is left; one JSON line of figures. The names' ids are the
    recorder's (its copy and the index file's are the same million messages')."""
    out = open_index(index)
    out.execute("ATTACH ? AS rec", (f"file:{source}?mode=ro",))
    marks = dict.fromkeys(("bench_text_q", "bench_user_q", "bench_package_q"), 0)
    copy = {"bench_text_q": "INSERT INTO messages_text (rowid, body) SELECT id, body"
                            " FROM rec.bench_text_q WHERE rowid > ? AND rowid <= ?",
            "bench_user_q": "INSERT OR IGNORE INTO main.user_messages SELECT * FROM"
                            " rec.bench_user_q WHERE rowid > ? AND rowid <= ?",
            "bench_package_q": "INSERT OR IGNORE INTO main.package_messages SELECT * FROM"
                               " rec.bench_package_q WHERE rowid > ? AND rowid <= ?"}
    done = 0
    cpu = time.process_time()
    stopped_at: float | None = None
    lag_at_stop = 0
    while True:
        out.execute("BEGIN IMMEDIATE")  # one snapshot of the recorder's file throughout
        tops = {q: out.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM rec.{q}").fetchone()[0]  # noqa: S608
                for q in marks}
        if tops == marks:
            out.execute("COMMIT")
            if stop.exists():
                stopped_at = stopped_at or time.perf_counter()
                break
            time.sleep(IDLE)
            continue
        late = time.perf_counter() if stopped_at is None and stop.exists() else None
        copied = {queue: out.execute(sql, (marks[queue], tops[queue])).rowcount
                  for queue, sql in copy.items()}
        out.execute("COMMIT")
        if late is not None:  # what was still to index when the recorder had finished
            stopped_at, lag_at_stop = late, copied["bench_text_q"]
        marks = tops
        done += copied["bench_text_q"]
    caught_up = time.perf_counter() - (stopped_at or time.perf_counter())
    print(json.dumps({"indexed": done, "cpu": time.process_time() - cpu,
                      "lag": lag_at_stop, "catch_up": caught_up}), flush=True)


def indexer(source: Path, index: Path, stop: Path) -> None:
    """Follow ``source``'s messages past its current top into ``index``'s links and text
    until the file ``stop`` exists and every row is indexed; one JSON line of figures."""
    from gateway.history import jsonio
    from gateway.history.records import record_of
    from gateway.messages import TypeIndex

    types = TypeIndex(())
    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None)
    out = open_index(index)
    (hwm,) = reader.execute("SELECT MAX(id) FROM messages").fetchone()
    names: dict[str, dict[str, int]] = {"users": {}, "packages": {}}

    def name_id(table: str, name: str) -> int:
        found = names[table].get(name)
        if found is None:
            row = out.execute(f"SELECT id FROM {table} WHERE name = ?", (name,)).fetchone()  # noqa: S608
            found = row[0] if row else out.execute(
                f"INSERT INTO {table} (name) VALUES (?)", (name,)).lastrowid  # noqa: S608
            names[table][name] = found
        return found  # type: ignore[return-value]

    done = 0
    cpu = time.process_time()
    stopped_at: float | None = None
    lag_at_stop = 0
    while True:
        rows = reader.execute("SELECT id, envelope FROM messages WHERE id > ? ORDER BY id"
                              " LIMIT ?", (hwm, INDEX_CHUNK)).fetchall()
        if not rows:
            if stop.exists():
                if stopped_at is None:  # the recorder was done before us: nothing behind
                    stopped_at = time.perf_counter()
                break
            time.sleep(IDLE)
            continue
        if stopped_at is None and stop.exists():
            stopped_at = time.perf_counter()
            (top,) = reader.execute("SELECT MAX(id) FROM messages").fetchone()
            lag_at_stop = top - hwm
        users, packages, texts = [], [], []
        for row_id, text in rows:
            record = record_of(jsonio.loads(text), types)
            users += [(name_id("users", u), record.timestamp, row_id) for u in record.users]
            packages += [(name_id("packages", p), record.timestamp, row_id)
                         for p in record.packages]
            texts.append((row_id, record.text))
        out.execute("BEGIN IMMEDIATE")
        out.executemany("INSERT OR IGNORE INTO user_messages (user_id, timestamp, message_id)"
                        " VALUES (?, ?, ?)", users)
        out.executemany("INSERT OR IGNORE INTO package_messages (package_id, timestamp,"
                        " message_id) VALUES (?, ?, ?)", packages)
        out.executemany("INSERT INTO messages_text (rowid, body) VALUES (?, ?)", texts)
        out.execute("COMMIT")
        hwm = rows[-1][0]
        done += len(rows)
    caught_up = time.perf_counter() - (stopped_at or time.perf_counter())
    print(json.dumps({"indexed": done, "cpu": time.process_time() - cpu,
                      "lag": lag_at_stop, "catch_up": caught_up}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--scratch", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--worker", choices=["together", "split", "handover", "indexer",
                                             "copier"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "together":
        recorder_worker(args.db, args.messages, args.seed, None, None)
        return
    if args.worker in ("split", "handover"):
        split_recorder(args.db, args.messages, args.seed, args.worker == "handover")
        return
    if args.worker in ("indexer", "copier"):
        (indexer if args.worker == "indexer" else copier)(args.db, args.index, args.stop)
        return
    scratch = Path(tempfile.mkdtemp(prefix="bg-split-", dir=args.scratch))
    tree = HERE.parent.parent
    env = {**os.environ, "PYTHONPATH": str(tree)}
    procs: list[subprocess.Popen[str]] = []
    try:
        arms = ("together", "split", "handover")
        copies = {name: scratch / f"{name}.sqlite"
                  for name in (*arms, "index-split", "index-handover")}
        for copy in copies.values():
            for suffix in ("", "-wal", "-index", "-index-wal"):  # (its index file too)
                if Path(f"{args.db}{suffix}").exists():
                    shutil.copyfile(f"{args.db}{suffix}", f"{copy}{suffix}")
        os.sync()

        def start(*extra: str) -> subprocess.Popen[str]:
            proc = subprocess.Popen([sys.executable, str(HERE), *extra,
                                     "--messages", str(args.messages), "--seed",
                                     str(args.seed)], cwd=tree, env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            return proc

        recorders = {name: start("--worker", name, "--db", str(copies[name])) for name in arms}
        for proc in recorders.values():  # its store open (a pre-008 copy migrated first)
            json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        per_round = args.messages // args.rounds // args.chunk
        print(f"split ingest at {args.db.name}: {args.messages:,} messages in batches of "
              f"{args.chunk}, {args.rounds} rounds an arm, alternating, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        # wall: the recorder's, until stored; kept: until its text is indexed too (its
        # thread's, or the indexer process's catch-up); cpu: the recorder's, all threads
        totals = {name: {"wall": 0.0, "kept": 0.0, "cpu": 0.0, "n": 0} for name in recorders}
        index_cpu = dict.fromkeys(arms, 0.0)
        index_n = dict.fromkeys(arms, 0.0)
        catch_up: dict[str, list[tuple[int, float]]] = {name: [] for name in arms}
        for number in range(args.rounds):
            order = arms if number % 2 == 0 else arms[::-1]
            for name in order:
                stop = scratch / f"stop-{name}-{number}"
                follower = None
                if name != "together":
                    follower = start("--worker", "indexer" if name == "split" else "copier",
                                     "--db", str(copies[name]),
                                     "--index", str(copies[f"index-{name}"]), "--stop", str(stop))
                    time.sleep(1)  # its connections open before the first batch
                for _ in range(per_round):
                    recorders[name].stdin.write(f"batch {args.chunk}\n")  # type: ignore[union-attr]
                    recorders[name].stdin.flush()  # type: ignore[union-attr]
                    reply = json.loads(recorders[name].stdout.readline())  # type: ignore[union-attr]
                    totals[name]["wall"] += reply["wall"]
                    totals[name]["kept"] += reply.get("wall_indexed", reply["wall"])
                    totals[name]["cpu"] += reply.get("cpu_indexed", reply["cpu"])
                totals[name]["n"] += per_round * args.chunk
                if follower is not None:
                    stop.touch()
                    got: dict[str, Any] = json.loads(follower.stdout.readline())  # type: ignore[union-attr]
                    follower.wait(60)
                    index_cpu[name] += got["cpu"]
                    index_n[name] += got["indexed"]
                    catch_up[name].append((got["lag"], got["catch_up"]))
                    totals[name]["kept"] += got["catch_up"]
        print(f"{'arm':<10}{'recorder wall msg/s':>20}{'CPU msg/s':>11}"
              f"{'indexer CPU us/msg':>20}  {'lag at end (msgs / s to catch up)':<44}"
              f"{'both keep up msg/s':>20}")
        for name, t in totals.items():
            n = t["n"]
            alone = n / t["wall"]
            index = f"{index_cpu[name] / index_n[name] * 1e6:.0f}" if index_n[name] else "-"
            lag = ", ".join(f"{lag:,} / {s:.2f}" for lag, s in catch_up[name]) or "-"
            print(f"{name:<10}{alone:>20,.0f}{n / t['cpu']:>11,.0f}{index:>20}  {lag:<44}"
                  f"{n / t['kept']:>20,.0f}")
        print(f"load {os.getloadavg()[0]:.1f}")
    finally:
        for proc in procs:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(120)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
