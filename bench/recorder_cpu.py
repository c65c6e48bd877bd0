"""The recorder end to end, its own CPU per message, code trees side by side (issue 14).

    .venv/bin/python bench/recorder_cpu.py --tree /work/base --tree . [--messages 20000]
        [--reps 3] [--db /var/tmp/bgbench/sqlite-1000000.sqlite] [--profile DIR]
    # SQLite and PostgreSQL at a million stored, side by side in one run (the template:
    # bench/history_pg_cache.py):
    .venv/bin/python bench/recorder_cpu.py --tree . --tree . \
        --db /var/tmp/bgbench/sqlite-1000000.sqlite --db pg:busgate_bench_pg1m

Why another: bench/history_at_scale.py publishes from the recorder's own process, so
its CPU figure holds the publishing too. Here the publisher is a process of its own
(pre-encoded frames on a raw PUB socket) and the recorder (a real ``Recorder``:
subscriber, consumer, batches, store) runs in a worker process of each tree
(``PYTHONPATH`` = the tree); the worker's CPU (user + system, all its threads) from the
first message to the last stored is the recorder's alone. Per tree: messages/s (wall)
and CPU µs per message, medians over ``--reps`` interleaved runs, with ratios to the
first tree and the 1-minute load average. ``--db``: each tree records into its own copy
(made once, under ``--scratch``, or ``CREATE DATABASE ... TEMPLATE`` for ``pg:NAME``,
dropped at the end; the source is never written); none: an empty history. On
PostgreSQL the server's CPU (its backends for the copy, read from /proc: the server must
run on this machine) is given beside the recorder's.
``--profile DIR``: each run is also sampled by py-spy (if installed) into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
#: The bench messages follow the stored ones: a year later, seq_ids of a new publisher.
YEAR = 365 * 86400
#: The PostgreSQL server of ``--db pg:TEMPLATE`` (its copies are made and dropped there).
ADMIN = os.environ.get("BUSGATE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
#: Clock ticks per second of /proc/<pid>/stat's CPU times.
TICKS = os.sysconf("SC_CLK_TCK")
#: Longest one run may take before it is reported as stuck.
RUN_TIMEOUT = 600.0

PUBLISHER = r'''
import sys, time, zmq
port, path = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read(); frames = []; i = 0
while i < len(raw):
    n = int.from_bytes(raw[i:i + 4], "big"); t = raw[i + 4:i + 4 + n]; i += 4 + n
    n = int.from_bytes(raw[i:i + 4], "big"); b = raw[i + 4:i + 4 + n]; i += 4 + n
    frames.append((t, b))
pub = zmq.Context.instance().socket(zmq.PUB); pub.setsockopt(zmq.SNDHWM, 0)
pub.bind("tcp://127.0.0.1:" + port)
for line in sys.stdin:
    a, b = map(int, line.split())
    for f in frames[a:b]:
        pub.send_multipart(f)
'''


def _server_cpu(url: str) -> float:
    """Seconds of CPU the server processes of ``url``'s database have used (PostgreSQL on
    this machine; 0.0 for a SQLite path)."""
    if not url.startswith("postgresql://"):
        return 0.0
    import psycopg

    total = 0.0
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()")]
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def worker(db: str, n: int, seed: int, profile: Path | None, history: str = "") -> dict[str, Any]:
    """One run in this tree: ``n`` messages of a new publisher into ``db`` (a SQLite
    path or a ``postgresql://`` URL)."""
    sys.path.insert(0, str(HERE.parent))
    import history_data as data

    from gateway import config
    from gateway import envelope as env
    from gateway.discovery import Endpoint
    from gateway.history.backends import open_history_url
    from gateway.history.recorder import Recorder
    from gateway.messages import TypeIndex

    postgres = db.startswith("postgresql://")
    root = Path(tempfile.mkdtemp(prefix="recorder-cpu-",
                                 dir=None if postgres else Path(db).parent))
    try:
        (root / "busgate.toml").write_text(f'[state]\ndir = "{root}"\n[history]\n{history}\n')
        settings = config.load(root / "busgate.toml")
        store = open_history_url(db, 30.0, cache_mb=settings.history.cache_mb)
        batches = [0]
        flush_name = "add_many" if postgres else "flush"
        store_flush = getattr(store, flush_name)

        def counted(*args: Any) -> int:  # batches written, for their mean size
            batches[0] += 1
            return store_flush(*args)

        setattr(store, flush_name, counted)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        frames = root / "frames"
        with open(frames, "wb") as out:
            for envelope in data.envelopes(n + 50, seed=seed):
                envelope["publisher"] = envelope["publisher_epoch"] = f"cpu-{seed}"
                envelope["timestamp"] += YEAR
                topic, body = env.encode(envelope)
                out.write(len(topic).to_bytes(4, "big") + topic
                          + len(body).to_bytes(4, "big") + body)
        pub = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(port), str(frames)],
                               stdin=subprocess.PIPE, text=True)
        recorder = Recorder(settings, store, index=TypeIndex(()),
                            endpoints=[Endpoint("cpu", f"tcp://127.0.0.1:{port}", None)])
        stop = threading.Event()
        thread = threading.Thread(target=recorder.run, args=(stop,), daemon=True)
        thread.start()

        def send(a: int, b: int) -> None:
            assert pub.stdin is not None
            pub.stdin.write(f"{a} {b}\n")
            pub.stdin.flush()

        sent = 0
        while recorder.stored == 0 and sent < 50:  # the slow joiner
            send(sent, sent + 1)
            sent += 1
            time.sleep(0.06)
        time.sleep(0.3)  # the joining messages' batch is committed
        first = recorder.stored + recorder.known
        batches[0] = 0
        spy = None
        if profile is not None and shutil.which("py-spy", path=str(Path(sys.executable).parent)):
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "-r", "200", "-f",
                 "raw", "-o", str(profile / f"{Path(sys.path[0]).name}-{seed}.txt"),
                 "-p", str(os.getpid()), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        server = _server_cpu(db)
        wall, cpu = time.perf_counter(), time.process_time()
        send(sent, n + 50)
        want = n + 50 - sent
        while recorder.stored + recorder.known < first + want and \
                time.perf_counter() - wall < RUN_TIMEOUT:
            time.sleep(0.002)
        stored_wall, stored_cpu = time.perf_counter() - wall, time.process_time() - cpu
        server = _server_cpu(db) - server
        # a tree whose text index fills behind the recorder (008): until it has them too
        index_lag = getattr(store, "index_lag", None)
        while index_lag is not None and index_lag() > 0 and \
                time.perf_counter() - wall < RUN_TIMEOUT:
            time.sleep(0.002)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        stop.set()
        thread.join(60)
        assert pub.stdin is not None
        pub.stdin.close()
        pub.wait(30)
        got = recorder.stored + recorder.known - first
        store.close()
        return {"n": got, "wall": stored_wall, "cpu": stored_cpu, "complete": got >= want,
                "server_cpu": server,
                "wall_indexed": wall, "cpu_indexed": cpu,
                "batch": got / max(1, batches[0])}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, default=[])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--db", action="append", default=[],
                        help="a history to copy: a SQLite path, or pg:TEMPLATE (a PostgreSQL"
                             " database on BUSGATE_BENCH_PG_ADMIN's server, copied by CREATE"
                             " DATABASE ... TEMPLATE); once for every tree, or once per tree"
                             " (the same tree twice: SQLite and PostgreSQL side by side);"
                             " default: an empty SQLite history")
    parser.add_argument("--scratch", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--config", action="append", default=[],
                        help="[history] lines per --tree, in order (e.g. "
                             "'batch_ms = 20'); default: the tree's defaults")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.messages, args.seed, args.profile,
                                "\n".join(args.config))))
        return
    if not args.tree:
        parser.error("give at least one --tree")
    configs = (args.config + [""] * len(args.tree))[:len(args.tree)]
    names = [f"{t}{' [' + c + ']' if c else ''}" for t, c in zip(args.tree, configs, strict=True)]
    if len(args.db) > 1:
        names = [f"{name} {_label(db)}" for name, db in zip(names, args.db, strict=False)]
    scratch = Path(tempfile.mkdtemp(prefix="recorder-cpu-", dir=args.scratch))
    try:
        sources = args.db * len(args.tree) if len(args.db) == 1 else args.db
        if sources and len(sources) != len(args.tree):
            parser.error("give one --db, or one per --tree")
        copies = [_copy(source, scratch, number) for number, source in enumerate(sources)] \
            or [str(scratch / f"tree{number}.sqlite") for number in range(len(args.tree))]
        print(f"recorder end to end, {args.messages:,} messages per run, into "
              f"{', '.join(map(_label, sources)) if sources else 'an empty history'}, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        runs: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(args.tree))}
        for rep in range(args.reps):
            order = list(range(len(args.tree)))
            if rep % 2:
                order.reverse()
            for index in order:
                tree = args.tree[index].resolve()
                done = subprocess.run(
                    [str(tree / ".venv/bin/python"), str(HERE), "--worker", str(copies[index]),
                     "--messages", str(args.messages), "--seed", str(100 + rep),
                     *(["--config", configs[index]] if configs[index] else []),
                     *(["--profile", str(args.profile)] if args.profile else [])],
                    cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, check=True,
                    capture_output=True, text=True, timeout=RUN_TIMEOUT + 120)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                runs[index].append(result)
                print(f"  rep {rep + 1} {names[index][-40:]:<40} "
                      f"{result['n'] / result['wall']:>9,.0f} msg/s "
                      f"{result['cpu'] / result['n'] * 1e6:>7.1f} CPU µs/msg, indexed "
                      f"{result['n'] / result.get('wall_indexed', result['wall']):>7,.0f}/s "
                      f"{result.get('cpu_indexed', result['cpu']) / result['n'] * 1e6:>6.1f} "
                      "µs, batch "
                      f"{result['batch']:,.0f}"
                      + (f", server {result['server_cpu'] / result['n'] * 1e6:.0f} CPU µs/msg"
                         if result.get("server_cpu") else "")
                      + f"{'' if result['complete'] else ' INCOMPLETE'}  load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
        print(f"{'tree':<44}{'msgs/s (median)':>16}{'CPU µs/msg':>12}{'batch':>7}"
              f"{'indexed msg/s':>15}{'CPU µs':>8}")
        base: tuple[float, float] | None = None
        for index, name in enumerate(names):
            rate = statistics.median(r["n"] / r["wall"] for r in runs[index])
            cpu = statistics.median(r["cpu"] / r["n"] * 1e6 for r in runs[index])
            batch = statistics.median(r["batch"] for r in runs[index])
            indexed = statistics.median(r["n"] / r.get("wall_indexed", r["wall"])
                                        for r in runs[index])
            indexed_cpu = statistics.median(r.get("cpu_indexed", r["cpu"]) / r["n"] * 1e6
                                            for r in runs[index])
            server = statistics.median(r.get("server_cpu", 0.0) / r["n"] * 1e6
                                       for r in runs[index])
            base = base or (rate, cpu, indexed)
            print(f"{name[-43:]:<44}{rate:>16,.0f}{cpu:>12.1f}{batch:>7,.0f}"
                  f"{indexed:>15,.0f}{indexed_cpu:>8.1f}"
                  + (f"  server {server:.0f} CPU µs/msg" if server else "")
                  + ("" if index == 0 else f"   x{rate / base[0]:.2f} x{cpu / base[1]:.2f}"
                     f" (indexed x{indexed / base[2]:.2f})"))
        print(f"load {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        _drop_copies()


#: PostgreSQL copies made by this run (dropped at its end).
_PG_COPIES: list[str] = []


def _label(source: str) -> str:
    return source if source.startswith("pg:") else Path(source).name


def _copy(source: str, scratch: Path, number: int) -> str:
    """Tree ``number``'s own copy of ``source``: a SQLite history with its log and index
    file (else the worker's open fills the index again first), or a PostgreSQL database
    made from the template ``pg:NAME`` (the file copy strategy: not 2.6 GB of WAL)."""
    if source.startswith("pg:"):
        import psycopg
        from psycopg import sql

        name = f"recorder_cpu_{os.getpid()}_{number}"
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(source[3:])))
        _PG_COPIES.append(name)
        return ADMIN.rsplit("/", 1)[0] + "/" + name
    copy = scratch / f"tree{number}.sqlite"
    for suffix in ("", "-wal", "-index", "-index-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{copy}{suffix}")
    return str(copy)


def _drop_copies() -> None:
    if not _PG_COPIES:
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(ADMIN, autocommit=True) as admin:
        for name in _PG_COPIES:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


if __name__ == "__main__":
    main()
