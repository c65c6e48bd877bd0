"""The text index's write cost and ``contains`` reads per FTS5 merge setting, side by
side in one run (005_fts_automerge.sql): why automerge 8.

    .venv/bin/python bench/fts_merge.py --messages 200000 --settings 4,8,16
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.history_data import envelopes
from gateway.history.records import text_of

BATCH = 1000  # the recorder's default history.batch_messages
TERMS = ("unstable", "sid", "libc6", "ZZqqx")  # frequent, very frequent, rare, absent


def build(path: Path, texts: list[str], automerge: int) -> float:
    """Index ``texts`` a batch per transaction; microseconds per message."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA cache_size=-262144")
    db.execute("CREATE VIRTUAL TABLE messages_text USING fts5 "
               "(body, content = '', tokenize = 'trigram')")
    db.execute("INSERT INTO messages_text (messages_text, rank) VALUES ('automerge', ?)",
               (automerge,))
    start = time.perf_counter()
    for first in range(0, len(texts), BATCH):
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO messages_text (rowid, body) VALUES (?, ?)",
                       [(n + 1, texts[n]) for n in range(first, min(len(texts), first + BATCH))])
        db.execute("COMMIT")
    spent = time.perf_counter() - start
    db.close()
    return spent / len(texts) * 1e6


def reads(path: Path) -> dict[str, tuple[int, float]]:
    """Per term: (matches, median ms of the newest 100 and the count)."""
    db = sqlite3.connect(path)
    out = {}
    for term in TERMS:
        spent = []
        for _ in range(7):
            start = time.perf_counter()
            db.execute("SELECT rowid FROM messages_text WHERE messages_text MATCH ?"
                       " ORDER BY rowid DESC LIMIT 100", (f'"{term}"',)).fetchall()
            (count,) = db.execute("SELECT count(*) FROM messages_text WHERE messages_text"
                                  " MATCH ?", (f'"{term}"',)).fetchone()
            spent.append(time.perf_counter() - start)
        out[term] = (count, round(statistics.median(spent) * 1000, 2))
    db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--settings", default="4,8,16", help="automerge values (4: FTS5's)")
    args = parser.parse_args()
    texts = [text_of(e.get("msg")) for e in envelopes(args.messages)]
    with tempfile.TemporaryDirectory() as tmp:
        for run, setting in enumerate(int(s) for s in args.settings.split(",")):
            path = Path(tmp) / f"run{run}.sqlite"
            micros = build(path, texts, setting)
            size = sum(os.path.getsize(p) for p in Path(tmp).glob(f"run{run}.sqlite*"))
            print(f"automerge {setting:2d}: {micros:6.1f} us/msg  {size / 1e6:6.1f} MB  "
                  f"contains (matches, ms): {reads(path)}", flush=True)


if __name__ == "__main__":
    main()
