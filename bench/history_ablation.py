"""What each part of the SQLite history costs at 1M stored: ingest with parts taken away
(issue 14's road to 10,000 messages/s), variants side by side in one run.

    .venv/bin/python bench/history_ablation.py --db /var/tmp/bgbench/sqlite-1000000.sqlite \\
        [--variant a --variant b ...] [--messages 20000] [--scratch /var/tmp] \\
        [--vacuumed DIR]

Why: the per-message figures of earlier profiles add up to more than a batch costs and
leave out the write-ahead log; taking one part away at a time on a copy of the same
million-message database, with the same next messages, says what a design without it
would gain. Variants (each on its own copy, prepared here; this tree's code, with the
statement of a part taken away swapped out):

    a    as is
    b    no text index: the folded-text insert inserts nothing and no indexer thread
         runs (since 008 that thread also makes the user/package links and their
         per-day counts from the appended names: on that layout b takes those away too)
    c    b + no msg_id dedup (messages_msg_id dropped, no Bloom filter checked, the
         insert without ON CONFLICT): what exact dedup by msg_id costs now
    d    c + no messages_topic / messages_category indexes
    g    d + no user/package links (their inserts insert nothing; names still looked up;
         since 008 the names the recorder appends for the indexer's links)
    e256 a with history.cache_mb 256
    p16k / p1k / p4k   a on a VACUUM INTO copy with page_size 16384 / 1024 / 4096 (p4k:
         the vacuum alone, the control for the other two)
    f    a with synchronous=OFF (what the fsyncs cost; not a proposal)
    w40k / w100k   a with a write-ahead log of 40,000 / 100,000 pages before a checkpoint
         (store.WAL_CHECKPOINT_PAGES): a page dirtied by many batches is copied back once

Per variant: CPU and wall per message over all batches (``Recorder.handle`` in batch
transactions of ``--chunk``, as bench/history_at_scale.py's worker), the median batch,
WAL frames written per batch (the WAL index header's mxFrame, read from the -shm file:
the pages a batch dirtied), bytes the process wrote to disk (/proc/self/io, WAL and
checkpoints), and a final checkpoint's time (what is left in the log is a cost too).
The copies are deleted at the end. Not a test: it prints figures.

Since 008 the text index is a file of its own (``<history>-index``), filled by a thread
behind the batches: the worker runs it (but for b and what builds on b), wakes it after
each commit, and a batch's reply waits until it has the batch, so CPU and wall are also
given "+index" (all threads; the disk bytes are until indexed too). The WAL, page and
checkpoint figures are the history file's alone; f's synchronous=OFF is the history's.
A ``--db`` from before 008 is migrated by each worker as it opens (untimed, its index
file filled: ~40 s a million); one with an index file has it copied along.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from history_at_scale import _envelopes, wait_indexed  # noqa: E402

#: variant -> (what is done to the copy, settings of the worker)
VARIANTS: dict[str, dict[str, Any]] = {
    "a": {},
    "b": {"text": False},
    "c": {"text": False, "unique": False},
    "d": {"text": False, "unique": False, "indexes": False},
    "g": {"text": False, "unique": False, "indexes": False, "links": False},
    "e256": {"cache_mb": 256},
    "p16k": {"page_size": 16384},
    "p1k": {"page_size": 1024},
    "p4k": {"page_size": 4096},
    "f": {"synchronous": "OFF"},
    "w40k": {"wal_pages": 40_000},
    "w100k": {"wal_pages": 100_000},
}
#: The text insert of variants without a text index: a statement that runs per row and
#: inserts nothing (``executemany`` wants DML), so the rest of the batch is unchanged.
NO_TEXT = "INSERT INTO bench_no_text (body) SELECT ?2 WHERE ?1 IS NULL"
NO_LINK = "INSERT INTO bench_no_text (body) SELECT ?3 WHERE ?1 IS NULL AND ?2 IS NULL"
NO_NAME = ("INSERT INTO bench_no_text (body) SELECT ?4 WHERE ?1 IS NULL AND ?2 IS NULL"
           " AND ?3 IS NULL")
NO_CONFLICT = ("INSERT INTO messages (msg_id, topic, category, timestamp, publisher,"
               " seq_id, envelope) VALUES (?, ?, ?, ?, ?, ?, ?)")


def prepare(source: Path, copy: Path, spec: dict[str, Any], vacuumed: Path | None) -> None:
    """``copy`` of ``source`` as ``spec`` wants it (schema parts taken away, page size)."""
    size = spec.get("page_size")
    if size:
        cached = vacuumed / f"page-{size}.sqlite" if vacuumed else None
        if cached and cached.exists():
            shutil.copyfile(cached, copy)
        else:
            src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None)
            src.execute(f"PRAGMA page_size={int(size)}")
            src.execute("VACUUM INTO ?", (str(copy),))
            src.close()
    else:
        for suffix in ("", "-wal"):
            if Path(str(source) + suffix).exists():
                shutil.copyfile(str(source) + suffix, str(copy) + suffix)
    # the index file (008) too: else the worker's open fills it again (~40 s a million)
    for suffix in ("-index", "-index-wal"):
        if Path(str(source) + suffix).exists():
            shutil.copyfile(str(source) + suffix, str(copy) + suffix)
    db = sqlite3.connect(copy, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    if spec.get("text") is False:  # (what NO_TEXT and NO_LINK insert into: nothing)
        db.execute("CREATE TABLE bench_no_text (body)")
    if spec.get("unique") is False:
        db.execute("DROP INDEX messages_msg_id")
    if spec.get("indexes") is False:
        db.execute("DROP INDEX messages_topic")
        db.execute("DROP INDEX messages_category")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _wal_header(shm: Path) -> tuple[int, bytes]:
    """(mxFrame, salt) of the WAL index header (native byte order, offsets 16 and 32)."""
    with open(shm, "rb") as f:
        head = f.read(48)
    return struct.unpack_from("=I", head, 16)[0], head[32:40]


def _written() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("write_bytes")).split()[1])


def _batch_pages(wal: Path, page: int, first: int, last: int) -> list[int]:
    """The page numbers of WAL frames ``first`` to ``last`` (big-endian, each frame's
    first 4 bytes after the 32-byte log header)."""
    pages = set()
    with open(wal, "rb") as f:
        for frame in range(first, last):
            f.seek(32 + frame * (page + 24))
            pages.add(struct.unpack(">I", f.read(4))[0])
    return sorted(pages)


def _owners(db: sqlite3.Connection, batches: list[list[int]]) -> dict[str, float]:
    """Pages per batch by the b-tree owning them now (dbstat); "free": on the freelist."""
    owner = dict(db.execute("SELECT pageno, name FROM dbstat"))
    counts: dict[str, float] = {}
    for pages in batches:
        for number in pages:
            name = owner.get(number, "free")
            counts[name] = counts.get(name, 0) + 1 / len(batches)
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def worker(db: Path, total: int, seed: int, spec: dict[str, Any]) -> None:
    """In a worker process: ``batch N`` on stdin -> the next N messages in one
    transaction, one JSON line of figures; ``checkpoint`` -> a timed final checkpoint."""
    from gateway import config
    from gateway.consumer import Delivery
    from gateway.consumer_state import Position
    from gateway.history import store as store_module
    from gateway.history.recorder import Recorder
    from gateway.history.store import SqliteHistory
    from gateway.messages import TypeIndex

    text = spec.get("text") is not False
    if not text:  # the folded text the index is filled from (and a match checked against)
        store_module._INSERT_FOLD = NO_TEXT  # type: ignore[attr-defined]
    if spec.get("unique") is False:
        store_module._INSERT_MESSAGE = NO_CONFLICT  # type: ignore[attr-defined]
    if spec.get("wal_pages"):
        store_module.WAL_CHECKPOINT_PAGES = spec["wal_pages"]  # type: ignore[attr-defined]
    if spec.get("links") is False:
        if hasattr(store_module, "_INSERT_NAME"):  # 008: names for the indexer's links
            store_module._INSERT_NAME = NO_NAME  # type: ignore[attr-defined]
        else:
            store_module._LINK = dict.fromkeys(store_module._LINK, NO_LINK)  # type: ignore[attr-defined]
    root = db.parent / (db.stem + "-state")
    root.mkdir(exist_ok=True)
    cache = spec.get("cache_mb")
    (root / "busgate.toml").write_text(
        f'[state]\ndir = "{root}"\n[history]\n' + (f"cache_mb = {cache}\n" if cache else ""))
    settings = config.load(root / "busgate.toml")
    store = SqliteHistory(db, cache_mb=settings.history.cache_mb)
    if spec.get("unique") is False:  # no index to probe: no dedup at all
        store.dedup.stored = lambda *args: set()  # type: ignore[method-assign]
    recorder = Recorder(settings, store, index=TypeIndex(()), endpoints=[])
    # the index file's thread (008), as the recorder runs it; none without a text index
    committed = getattr(store, "committed", None) if text else None
    if committed is not None:
        store.start_indexer()
    position = Position(store.path)
    dbc = position.db
    store.tune(dbc)
    if spec.get("synchronous"):
        dbc.execute(f"PRAGMA synchronous={spec['synchronous']}")
    page = dbc.execute("PRAGMA page_size").fetchone()[0]
    shm = Path(str(db) + "-shm")
    envelopes = iter(_envelopes(total, seed))
    batches: list[list[int]] = []
    for line in sys.stdin:
        verb, *rest = line.split()
        if verb == "breakdown":
            print(json.dumps(_owners(dbc, batches)), flush=True)
            continue
        if verb == "checkpoint":
            wall, cpu, wrote = time.perf_counter(), time.process_time(), _written()
            busy, frames, _done = dbc.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            print(json.dumps({"wall": time.perf_counter() - wall, "frames": frames,
                              "cpu": time.process_time() - cpu, "busy": busy,
                              "wrote": _written() - wrote}), flush=True)
            continue
        chunk = [next(envelopes) for _ in range(int(rest[0]))]
        before, salt = _wal_header(shm)
        wall, cpu, wrote = time.perf_counter(), time.process_time(), _written()
        kernel = os.times().system
        dbc.execute("BEGIN IMMEDIATE")
        for envelope in chunk:
            recorder.handle(Delivery(envelope, db=dbc, publisher="bench", batched=True))
        recorder.flush(dbc)
        position.advance("bench", chunk[-1]["publisher_epoch"], chunk[-1]["seq_id"])
        dbc.execute("COMMIT")
        if committed is not None:
            committed()  # as the consumer's after_commit: wakes the indexer
        reply = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                 "sys": os.times().system - kernel}
        reply["indexed"] = wait_indexed(store, wall)
        reply.update(wall_indexed=time.perf_counter() - wall,
                     cpu_indexed=time.process_time() - cpu, wrote=_written() - wrote)
        after, new_salt = _wal_header(shm)
        # a new salt: the log restarted from its first frame (a checkpoint was complete)
        reply["frames"] = after if new_salt != salt else after - before
        reply["restart"] = new_salt != salt
        reply["page"] = page
        if rest[1:] == ["pages"]:  # outside the timing
            batches.append(_batch_pages(Path(str(db) + "-wal"), page,
                                        0 if new_salt != salt else before, after))
        print(json.dumps(reply), flush=True)
    position.close()
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--scratch", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--vacuumed", type=Path, default=None,
                        help="dir of pristine page-SIZE.sqlite VACUUM INTO copies to cp "
                             "instead of vacuuming again (never written to)")
    parser.add_argument("--breakdown", action="append", default=[],
                        help="variant whose pages dirtied per batch are mapped to tables")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.db, args.messages, args.seed, VARIANTS[args.worker])
        return
    names = args.variant or list(VARIANTS)
    scratch = Path(tempfile.mkdtemp(prefix="bg-ablation-", dir=args.scratch))
    workers: dict[str, subprocess.Popen[str]] = {}
    tree = HERE.parent.parent
    try:
        for name in names:
            started = time.perf_counter()
            copy = scratch / f"{name}.sqlite"
            prepare(args.db, copy, VARIANTS[name], args.vacuumed)
            print(f"prepared {name} in {time.perf_counter() - started:.0f} s", flush=True)
            workers[name] = subprocess.Popen(
                [sys.executable, str(HERE), "--worker", name, "--db", str(copy),
                 "--messages", str(args.messages), "--seed", str(args.seed)],
                cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        # the copies' pages on disk first: else a variant's first checkpoint fsync would
        # write out whatever of its 2.7 GB copy the kernel had not yet
        started = time.perf_counter()
        os.sync()
        print(f"sync {time.perf_counter() - started:.0f} s", flush=True)
        print(f"ablation at {args.db.name}: {args.messages:,} messages in batches of "
              f"{args.chunk}, variants {', '.join(names)}, load {os.getloadavg()[0]:.1f}",
              flush=True)

        def ask(name: str, command: str) -> dict[str, Any]:
            proc = workers[name]
            proc.stdin.write(command + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            return json.loads(proc.stdout.readline())  # type: ignore[union-attr]

        rows: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for step in range(args.messages // args.chunk):
            order = names if step % 2 == 0 else names[::-1]
            for name in order:
                pages = " pages" if name in args.breakdown else ""
                rows[name].append(ask(name, f"batch {args.chunk}{pages}"))
        owners = {name: ask(name, "breakdown") for name in args.breakdown}
        final = {name: ask(name, "checkpoint") for name in names}
        print(f"{'variant':<8}{'CPU us/msg':>11}{'of it sys':>10}{'+index':>8}{'wall msg/s':>11}"
              f"{'+index':>8}{'median batch/s':>15}{'+index+ckpt msg/s':>18}{'WAL KiB/msg':>12}"
              f"{'pages/batch':>12}{'disk KiB/msg':>13}{'restarts':>9}"
              "  ratio to a (CPU, wall; +index)")
        base: tuple[float, float, float, float] | None = None
        for name in names:
            got = rows[name]
            n = args.chunk * len(got)
            cpu_us = sum(r["cpu"] for r in got) / n * 1e6
            sys_us = sum(r["sys"] for r in got) / n * 1e6
            wall = n / sum(r["wall"] for r in got)
            cpu_indexed = sum(r["cpu_indexed"] for r in got) / n * 1e6
            wall_indexed = n / sum(r["wall_indexed"] for r in got)
            late = sum(not r["indexed"] for r in got)
            median = statistics.median(args.chunk / r["wall"] for r in got)
            with_ckpt = n / (sum(r["wall_indexed"] for r in got) + final[name]["wall"])
            frames = sum(r["frames"] for r in got)
            wal_kib = frames * (got[0]["page"] + 24) / n / 1024
            disk_kib = (sum(r["wrote"] for r in got) + final[name]["wrote"]) / n / 1024
            restarts = sum(r["restart"] for r in got)
            base = base or (cpu_us, wall, cpu_indexed, wall_indexed)
            print(f"{name:<8}{cpu_us:>11.0f}{sys_us:>10.0f}{cpu_indexed:>8.0f}{wall:>11,.0f}"
                  f"{wall_indexed:>8,.0f}{median:>15,.0f}{with_ckpt:>18,.0f}"
                  f"{wal_kib:>12.2f}{frames / len(got):>12.0f}{disk_kib:>13.2f}"
                  f"{restarts:>9}   x{base[0] / cpu_us:.2f} x{wall / base[1]:.2f};"
                  f" x{base[2] / cpu_indexed:.2f} x{wall_indexed / base[3]:.2f}"
                  + (f" ({late} batches not indexed in time)" if late else ""))
        for name, counts in owners.items():
            print(f"pages dirtied per batch of {args.chunk}, {name}: " + ", ".join(
                f"{table} {pages:.0f}" for table, pages in counts.items()))
        print(f"load {os.getloadavg()[0]:.1f}")
    finally:
        for proc in workers.values():
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(120)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
