"""PostgreSQL recorder ingest *at* a million stored messages, trees side by side (issue 14).

    .venv/bin/python bench/history_pg_at_scale.py --template pgingest_1m \\
        --tree /work/base --tree . [--messages 30000] [--chunk 1000] [--e2e 5000] \\
        [--rounds 3] [--runs 100]

The server: ``BUSGATE_BENCH_PG_ADMIN`` (default postgres@127.0.0.1:5432/postgres).

Each tree gets its own copy of the ``--template`` database (``CREATE DATABASE ...
TEMPLATE ... STRATEGY FILE_COPY``: not 2.6 GB through the WAL; dropped at the end; the
template is never written: see bench/history_pg_cache.py) and a worker process running
that tree's code, which opens it with that tree's store (its migrations applied: the
time is printed). The workers take the same next messages chunk by chunk, alternately,
so both see the same load. Per tree: batched ingest (``Recorder.handle`` staging,
``Recorder.flush`` writing, as the consumer's batches do) wall and client CPU
messages/s, the server CPU of that database's backends and the WAL written meanwhile
per message (the server's: other databases' writes count too, so it is an upper bound
on a shared server); then end to end (ZeroMQ PUB -> a real Recorder), rounds
alternating; then ``/raw`` p50/p99 over HTTP on each copy (bench/history.py's query
kinds). The 1-minute load average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ADMIN = os.environ.get("BUSGATE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
#: Clock ticks per second of /proc/<pid>/stat's CPU times.
TICKS = os.sysconf("SC_CLK_TCK")


def _server_cpu(conn: Any) -> float:
    """Seconds of CPU the backends of ``conn``'s database have used (same machine)."""
    total = 0.0
    for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname ="
                               " current_database()"):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return total


def worker(url: str, total: int, seed: int, state: Path) -> None:
    """Runs in a tree (its ``gateway`` first on sys.path); answers ``batch N``, ``e2e K``
    and ``reads R`` on stdin, one JSON line each."""
    import psycopg

    import gateway
    from gateway import config
    from gateway.consumer import Delivery
    from gateway.history.pgstore import PostgresHistory
    from gateway.history.recorder import Recorder
    from gateway.messages import TypeIndex

    # after the tree's gateway: bench/history.py puts *this* script's tree first on
    # sys.path, and a gateway imported after it would be that tree's, not the worker's
    sys.path.insert(0, str(HERE.parent))
    import history as hbench
    import history_at_scale as scale

    started = time.perf_counter()
    store = PostgresHistory(url, query_timeout=30.0)
    migrated = time.perf_counter() - started
    (state / "busgate.toml").write_text(f'[state]\ndir = "{state}"\n')
    settings = config.load(state / "busgate.toml")
    recorder = Recorder(settings, store, index=TypeIndex(()), endpoints=[])
    envelopes = iter(scale._envelopes(total, seed))
    monitor = psycopg.connect(url, autocommit=True)
    print(json.dumps({"migrated": migrated, "gateway": str(Path(gateway.__file__).parent)}),
          flush=True)
    e2e_round = 0
    for line in sys.stdin:
        verb, count = line.split()
        n = int(count)
        if verb == "batch":
            chunk = [next(envelopes) for _ in range(n)]
            (lsn,) = monitor.execute("SELECT pg_current_wal_lsn()").fetchone()
            server = _server_cpu(monitor)
            wall, cpu = time.perf_counter(), time.process_time()
            for envelope in chunk:
                recorder.handle(Delivery(envelope, publisher="bench", batched=True))
            recorder.flush()
            reply = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
            reply["server"] = _server_cpu(monitor) - server
            (reply["wal"],) = monitor.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn",
                                              (lsn,)).fetchone()
        elif verb == "e2e":
            e2e_round += 1  # a new publisher each round: followed from its first message
            reply = scale._e2e(settings, store, scale._envelopes(
                n, seed + e2e_round, f"e2e-{e2e_round}"))
        else:
            reply = {k: list(v) for k, v in hbench.reads(store, 1_000_000, n).items()}
        print(json.dumps(reply, default=float), flush=True)
    monitor.close()
    store.close()


def main() -> None:
    import psycopg
    from psycopg import sql

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", required=True, help="the 1M database (never written)")
    parser.add_argument("--tree", action="append", type=Path, required=True)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--e2e", type=int, default=5000, help="messages per e2e round")
    parser.add_argument("--rounds", type=int, default=3, help="e2e rounds per tree")
    parser.add_argument("--runs", type=int, default=100, help="/raw requests per kind (0: none)")
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.messages, args.seed, args.state)
        return
    names = [f"bg_at_scale_{os.getpid()}_{i}" for i in range(len(args.tree))]
    scratch = Path(tempfile.mkdtemp(prefix="bg-pg-at-scale-"))
    workers: list[subprocess.Popen[str]] = []
    admin = psycopg.connect(ADMIN, autocommit=True)
    try:
        for number, (tree, name) in enumerate(zip(args.tree, names, strict=True)):
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(args.template)))
            tree = tree.resolve()
            state = scratch / f"tree{number}"
            state.mkdir()
            workers.append(subprocess.Popen(
                [str(tree / ".venv/bin/python"), str(HERE), "--worker",
                 ADMIN.rsplit("/", 1)[0] + "/" + name, "--state", str(state), "--tree",
                 str(tree), "--messages", str(args.messages), "--seed", str(args.seed),
                 "--template", args.template],
                cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for tree, proc in zip(args.tree, workers, strict=True):
            hello = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            print(f"{tree}: gateway from {hello['gateway']}, opened (migrations) in "
                  f"{hello['migrated']:.2f} s")
        print(f"PostgreSQL ingest at {args.template}: {args.messages:,} messages in chunks of "
              f"{args.chunk}, load {os.getloadavg()[0]:.1f}", flush=True)

        def ask(index: int, command: str) -> dict[str, Any]:
            proc = workers[index]
            proc.stdin.write(command + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            return json.loads(proc.stdout.readline())  # type: ignore[union-attr]

        def alternately(command: str, steps: int) -> dict[int, list[dict[str, Any]]]:
            out: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(workers))}
            for step in range(steps):
                order = list(range(len(workers)))
                if step % 2:
                    order.reverse()
                for index in order:
                    out[index].append(ask(index, command))
            return out

        batches = alternately(f"batch {args.chunk}", args.messages // args.chunk)
        e2e = alternately(f"e2e {args.e2e}", args.rounds if args.e2e else 0)
        print(f"{'tree':<24}{'batched/s':>10}{'p50 chunk/s':>12}{'client CPU/s':>13}"
              f"{'server CPU/s':>13}{'WAL<=B/msg':>11}{'e2e/s (med)':>12}{'e2e batch':>10}")
        base: dict[str, float] = {}
        for index, tree in enumerate(args.tree):
            rows = batches[index]
            n = args.chunk * len(rows)
            figures = {
                "wall": n / sum(r["wall"] for r in rows),
                "median": statistics.median(args.chunk / r["wall"] for r in rows),
                "cpu": n / sum(r["cpu"] for r in rows),
                "server": n / max(1e-9, sum(r["server"] for r in rows)),
                "wal": sum(r["wal"] for r in rows) / n,
                "e2e": statistics.median([r["n"] / r["wall"] for r in e2e[index]]
                                         or [float("nan")])}
            done = sum(r["batches"] for r in e2e[index])
            size = f"{sum(r['n'] for r in e2e[index]) / done:.0f}" if done else "-"
            base = base or figures
            print(f"{str(tree)[-23:]:<24}{figures['wall']:>10,.0f}{figures['median']:>12,.0f}"
                  f"{figures['cpu']:>13,.0f}{figures['server']:>13,.0f}{figures['wal']:>11,.0f}"
                  f"{figures['e2e']:>12,.0f}{size:>10}"
                  + ("" if figures is base else "   x" + " x".join(
                      f"{figures[k] / base[k]:.2f}" for k in figures)))
        print(f"load {os.getloadavg()[0]:.1f}", flush=True)
        if args.runs:
            reads = alternately(f"reads {args.runs}", 1)
            print(f"\n/raw over HTTP after the ingest, {args.runs} requests each (ms, p50 / p99),"
                  f" load {os.getloadavg()[0]:.1f}")
            print(f"{'query':<24}" + "".join(f"{str(t)[-20:]:>22}" for t in args.tree))
            for kind in reads[0][0]:
                print(f"{kind:<24}" + "".join(
                    f"{reads[i][0][kind][0]:>11.1f} / {reads[i][0][kind][1]:>7.1f}"
                    + (f" ({reads[i][0][kind][2]} err)" if reads[i][0][kind][2] else "")
                    for i in range(len(workers))))
    finally:
        end_workers(workers, admin, names)


def end_workers(workers: list[subprocess.Popen[str]], admin: Any, databases: list[str]) -> None:
    """A bench's end: each tree's worker told to stop (its stdin closed) and waited for,
    then the database copies dropped."""
    from psycopg import sql

    for proc in workers:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(120)
    for name in databases:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    admin.close()


if __name__ == "__main__":
    main()
