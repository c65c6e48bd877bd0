"""``/raw`` of code trees side by side over one stored history (issue 14's query kinds).

    .venv/bin/python bench/history_trees.py --tree /work/base --tree . \
        [--database postgresql://postgres@127.0.0.1:5432/busgate_bench_history] \
        [--database /var/tmp/busgate-bench-history/sqlite-1000000.sqlite] [--runs 100]

Why another bench: bench/history.py builds and reads with one tree, so a before/after
pair from it is two runs under two loads. Here each tree runs its own ``busgate web``
app (uvicorn, that tree's code and virtualenv) over the same database, and every
request is sent to each tree in turn (the order alternating), so both see the same
load, the same cache and the same drawn parameters. Per query kind and tree: p50/p99
in ms, how many answers said ``total_capped`` and their median ``total`` (a count cut
short is visible there, not hidden in the times). The databases must exist
(bench/history.py builds them); a tree whose code migrates a schema changes it for the
others too, so compare such trees on copies.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from history import _free_port, pct, query_makers

SERVE = """
import sys, uvicorn
from gateway.history.backends import open_history_url
from gateway.history.web import make_app
store = open_history_url(sys.argv[2], 30.0, create=False, readonly=sys.argv[3] == "1")
uvicorn.run(make_app(store), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


#: What a ``--readonly`` PostgreSQL session gets: it refuses every write.
PG_READ_ONLY = "options=-c%20default_transaction_read_only%3Don"


def start(tree: Path, database: str,
          readonly: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """``busgate web``'s app from ``tree`` over ``database`` (``readonly``: opened without
    migrating, PostgreSQL sessions read-only); (process, base URL)."""
    port = _free_port()
    python = tree / ".venv" / "bin" / "python"
    if readonly and database.startswith(("postgresql://", "postgres://")):
        database += ("&" if "?" in database else "?") + PG_READ_ONLY
    proc = subprocess.Popen([str(python), "-c", SERVE, str(port), database,
                             "1" if readonly else "0"], cwd=tree,
                            env={**os.environ, "PYTHONPATH": str(tree)})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a tree's first open may migrate
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=5).status_code < 500:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{tree}: the server exited {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{tree}: the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", action="append", type=Path, required=True)
    parser.add_argument("--database", action="append", default=None,
                        help="a postgresql:// URL or a SQLite path (repeatable)")
    parser.add_argument("--runs", type=int, default=100, help="requests per kind and tree")
    parser.add_argument("--kinds", default="", help="comma-separated kinds (default all)")
    parser.add_argument("--per-tree", action="store_true",
                        help="one --database per --tree, in order (trees whose schemas "
                             "differ, each on its own copy of one history)")
    parser.add_argument("--readonly", action="store_true",
                        help="open the stores read-only (a database others use: the "
                             "lead's busgate_bench_history); trees must share a schema")
    args = parser.parse_args()
    databases = args.database or ["postgresql://postgres@127.0.0.1:5432/busgate_bench_history"]
    trees = [t.resolve() for t in args.tree]
    print(f"/raw side by side, {args.runs} requests per kind and tree, "
          f"load {os.getloadavg()[0]:.1f}")
    if args.per_tree and len(databases) != len(trees):
        raise SystemExit("--per-tree: one --database per --tree")
    for database in [databases] if args.per_tree else databases:
        servers = [start(tree, db, args.readonly) for tree, db in
                   zip(trees, database if args.per_tree else [database] * len(trees),
                       strict=True)]
        clients = [httpx.Client(base_url=base, timeout=60) for _, base in servers]
        try:
            makers = query_makers(1_000_000)
            wanted = [k for k in args.kinds.split(",") if k] or list(makers)
            rng = random.Random(5)
            loads = [os.getloadavg()[0]]
            rows = []
            for kind in wanted:
                times: list[list[float]] = [[] for _ in trees]
                capped = [0] * len(trees)
                totals: list[list[int]] = [[] for _ in trees]
                errors = [0] * len(trees)
                differ = 0
                for run in range(args.runs + 2):  # the first two warm each tree
                    params = makers[kind](rng)
                    order = list(range(len(trees)))
                    if run % 2:
                        order.reverse()
                    answers: dict[int, list[str]] = {}
                    for i in order:
                        started = time.perf_counter()
                        response = clients[i].get("/raw", params=params)
                        elapsed = (time.perf_counter() - started) * 1000
                        if run < 2:
                            continue
                        times[i].append(elapsed)
                        if response.status_code != 200:
                            errors[i] += 1
                        else:
                            answer = response.json()
                            capped[i] += bool(answer["total_capped"])
                            totals[i].append(answer["total"])
                            answers[i] = [m["msg_id"] for m in answer["raw_messages"]]
                    differ += len({tuple(a) for a in answers.values()}) > 1
                loads.append(os.getloadavg()[0])
                rows.append((kind, [(pct(t, 0.5), pct(t, 0.99)) for t in times],
                             [(c, int(pct(t, 0.5))) for c, t in zip(capped, totals, strict=True)],
                             errors, differ))
            print(f"\n{database} (load {min(loads):.1f}-{max(loads):.1f}): "
                  "p50 / p99 ms [answers total_capped, median total], per tree; "
                  "last/first p50, p99; requests whose rows differ between trees")
            for kind, figures, capped, errors, differ in rows:
                line = f"  {kind:<22}"
                for (p50, p99), (cut, total), err in zip(figures, capped, errors, strict=True):
                    line += (f"{p50:>8.1f} / {p99:>7.1f} [{cut:>3}, {total:>5}]"
                             + (f" {err} ERR" if err else ""))
                (b50, b99), (a50, a99) = figures[0], figures[-1]
                print(line + f"   x{a50 / b50:.2f}, x{a99 / b99:.2f}"
                      + (f"   {differ} DIFFER" if differ else ""))
        finally:
            for client in clients:
                client.close()
            for proc, _ in servers:
                proc.terminate()
                proc.wait(10)
    print(f"trees: {', '.join(map(str, trees))}")


if __name__ == "__main__":
    main()
