"""Throughput and latency of the bus core, beside stock fedmsg and raw pyzmq.

Prints, in one run on this machine:
  * durable path: one `busgate publish` reading N stdin lines -> spool -> outbox
    -> ZeroMQ -> a live subscriber (events/s, from the command's start to the last
    message received);
  * publisher alone: a pre-filled outbox drained to a live subscriber;
  * latency: from starting a `busgate publish --message` process to the subscriber's
    receipt (p50/p99 over R runs; the process start is part of what a shell user waits
    for, and the daemon usually has the item before the process has exited, so "exit ->
    receipt" measured nothing);
  * stock fedmsg 1.1.7: FedMsgContext.publish -> tail_messages (non-durable, unsigned);
  * raw pyzmq PUB/SUB with the same two-frame messages.

One sample per line, taken in sequence, tiny bodies: a quick look. For figures to
compare (interleaved medians, load, realistic bodies, both shapes, ratios within a
repetition) use bench/bus.py.

Usage: .venv/bin/python bench/throughput.py [--events N] [--runs R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway import config, discovery, heartbeat, runtime  # noqa: E402
from gateway.event import Event  # noqa: E402
from gateway.subscriber import Subscriber  # noqa: E402

BUSGATE = [sys.executable, "-m", "gateway"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(root: Path, extra: str = "") -> config.Settings:
    """The benches' gateway: state under ``root``, free ports, plus ``extra`` TOML."""
    path = root / "busgate.toml"
    path.write_text(textwrap.dedent(f"""
        [state]
        dir = "{root / 'var'}"
        [zmq]
        publish = "tcp://127.0.0.1:{free_port()}"
        replay = "tcp://127.0.0.1:{free_port()}"
        heartbeat_interval = 1.0
    """) + extra)
    return config.load(path)


def start_daemon(settings: config.Settings) -> subprocess.Popen:
    env = {**os.environ, "BUSGATE_CONFIG": settings.loaded_from[0]}
    log = open(Path(settings.loaded_from[0]).with_suffix(".log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen([*BUSGATE, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while b"publishing on" not in Path(log.name).read_bytes():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"daemon did not start: {Path(log.name).read_text()}")
        time.sleep(0.02)
    return proc


def subscribe(settings: config.Settings) -> Subscriber:
    return Subscriber(discovery.discover(settings),
                      heartbeat_topic=heartbeat.topic(settings.topic_prefix))


def joined(settings: config.Settings, sub: Subscriber) -> None:
    env = {**os.environ, "BUSGATE_CONFIG": settings.loaded_from[0]}
    for _ in range(100):
        subprocess.run([*BUSGATE, "publish", "--message", "probe"], env=env, check=True)
        if list(sub.messages(count=1, timeout=0.2)):
            return
    raise SystemExit("subscriber never joined")


@contextlib.contextmanager
def gateway_with_subscriber() -> Iterator[tuple[Subscriber, dict[str, str]]]:
    """A running daemon in a temp dir and a joined subscriber; yields (subscriber, env)."""
    root = Path(tempfile.mkdtemp(prefix="bg-bench-"))
    settings = make_settings(root)
    proc = start_daemon(settings)
    try:
        with subscribe(settings) as sub:
            joined(settings, sub)
            yield sub, {**os.environ, "BUSGATE_CONFIG": settings.loaded_from[0]}
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def durable_path(n: int) -> tuple[float, float]:
    data = "".join(f"event {i}\n" for i in range(n)).encode()
    with gateway_with_subscriber() as (sub, env):
        start = time.perf_counter()
        subprocess.run([*BUSGATE, "publish"], input=data, env=env, check=True)
        spooled = time.perf_counter() - start
        got = sum(1 for _ in sub.messages(count=n, timeout=300))
        elapsed = time.perf_counter() - start
    assert got == n, f"received {got} of {n}"
    return n / elapsed, spooled


def publisher_alone(n: int) -> float:
    from gateway.publisher import Publisher
    from gateway.transports.zmq import ZmqPublisher

    root = Path(tempfile.mkdtemp(prefix="bg-bench-"))
    settings = make_settings(root)
    store = runtime.open_store(settings)
    with store.transaction() as tx:
        tx.add_events(Event("bench", "message", "log", key=f"p{i}", body={"n": i})
                      for i in range(n))
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(settings.zmq.publish)
    done = threading.Event()
    times: list[float] = []

    def receive() -> None:
        count = 0
        while count < n:
            sub.recv_multipart()
            count += 1
        times.append(time.perf_counter())
        done.set()

    async def run() -> float:
        transport = ZmqPublisher(ctx, settings.zmq.publish, sndhwm=0)
        # wait for the subscription to reach the XPUB socket (no sleep: it tells us)
        while transport.subscribers == 0:
            transport.drain_subscriptions()
            await asyncio.sleep(0.001)
        publisher = Publisher(store, transport)
        receiver = threading.Thread(target=receive)
        receiver.start()
        start = time.perf_counter()
        task = asyncio.create_task(publisher.run())
        while not done.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        transport.close()
        return n / (times[0] - start)

    try:
        return asyncio.run(run())
    finally:
        sub.close(0)
        ctx.destroy(0)
        shutil.rmtree(root, ignore_errors=True)


FEDMSG_ONE = textwrap.dedent("""
    import sys, fedmsg.core
    ctx = fedmsg.core.FedMsgContext(
        name="one", active=False, topic_prefix="org.debian", environment="dev",
        endpoints={"one": ["tcp://127.0.0.1:%s" % sys.argv[1]]}, high_water_mark=0,
        io_threads=1, post_init_sleep=0.5, zmq_linger=1000, timeout=2, zmq_enabled=True,
        sign_messages=False)
    ctx.publish(topic="message.log", msg={"log": "one"}, modname="bench")
""")

FEDMSG_WATCH = textwrap.dedent("""
    import sys, time, fedmsg.core
    ctx = fedmsg.core.FedMsgContext(
        name=None, active=False, mute=True, topic_prefix="org.debian", environment="dev",
        endpoints={"one": ["tcp://127.0.0.1:%s" % sys.argv[1]]}, high_water_mark=0,
        io_threads=1, post_init_sleep=0, zmq_linger=0, timeout=2, zmq_enabled=True,
        zmq_reconnect_ivl=10, zmq_reconnect_ivl_max=10, validate_signatures=False)
    for _ in ctx.tail_messages():
        print(time.monotonic(), flush=True)
""")


def fedmsg_start_latency(runs: int) -> float:
    """Median ms from starting a process that calls fedmsg's publish to receipt."""
    port = free_port()
    watch = subprocess.Popen([sys.executable, "-c", FEDMSG_WATCH, str(port)],
                             stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    samples = []
    try:
        for _ in range(runs):
            started = time.monotonic()
            subprocess.run([sys.executable, "-c", FEDMSG_ONE, str(port)], check=True)
            samples.append((float(watch.stdout.readline()) - started) * 1000)
    finally:
        watch.kill()
    return statistics.median(samples)


def latency(runs: int) -> tuple[float, float, float]:
    """ms from starting a `busgate publish --message` process to receipt: p50, p99, max."""
    samples = []
    with gateway_with_subscriber() as (sub, env):
        for i in range(runs):
            started = time.perf_counter()
            subprocess.run([*BUSGATE, "publish", "--message", f"lat {i}"], env=env, check=True)
            (message,) = list(sub.messages(count=1, timeout=10))
            samples.append((time.perf_counter() - started) * 1000)
            assert message.body["log"] == f"lat {i}"
            time.sleep(0.02)  # an idle machine between events
    samples.sort()
    return (statistics.median(samples), samples[int(len(samples) * 0.99) - 1], samples[-1])


FEDMSG_PUBLISHER = textwrap.dedent("""
    import sys, time, fedmsg.core
    port, n = int(sys.argv[1]), int(sys.argv[2])
    ctx = fedmsg.core.FedMsgContext(
        name="bench", active=False, topic_prefix="org.debian", environment="dev",
        endpoints={"bench": ["tcp://127.0.0.1:%d" % port]}, high_water_mark=0,
        io_threads=1, post_init_sleep=0.5, zmq_linger=1000, timeout=2, zmq_enabled=True,
        sign_messages=False)
    print("bound", flush=True)
    sys.stdin.readline()
    for i in range(n):
        ctx.publish(topic="message.log", msg={"log": "event %d" % i}, modname="bench")
    time.sleep(1)
""")

FEDMSG_CONSUMER = textwrap.dedent("""
    import sys, time, fedmsg.core
    port, n, idle = int(sys.argv[1]), int(sys.argv[2]), 3.0
    ctx = fedmsg.core.FedMsgContext(
        name=None, active=False, mute=True, topic_prefix="org.debian", environment="dev",
        endpoints={"bench": ["tcp://127.0.0.1:%d" % port]}, high_water_mark=0, io_threads=1,
        post_init_sleep=0, zmq_linger=0, timeout=idle, zmq_enabled=True,
        validate_signatures=False)
    count, first, last = 0, None, None
    import zmq
    for name, ep, topic, msg in ctx.tail_messages():
        now = time.perf_counter()
        first = first or now
        last = now
        count += 1
        if msg["msg"]["log"] == "ready?":
            print("ready", flush=True); count = 0; first = None
            continue
        if count >= n:
            break
    print(count, (last - first) if first else 0, flush=True)
""")


def stock_fedmsg(n: int) -> tuple[float, int]:
    port = free_port()
    pub = subprocess.Popen([sys.executable, "-c", FEDMSG_PUBLISHER, str(port), str(n)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert pub.stdout.readline().strip() == "bound"
    con = subprocess.Popen([sys.executable, "-c", FEDMSG_CONSUMER, str(port), str(n)],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(2.0)  # fedmsg has no join signal: give the consumer time to subscribe
    start = time.perf_counter()
    pub.stdin.write("go\n")
    pub.stdin.flush()
    try:
        out, _ = con.communicate(timeout=max(60, n / 2000))
    except subprocess.TimeoutExpired:
        con.kill()
        out, _ = con.communicate()
    pub.kill()
    count, span = out.split()[-2:]
    elapsed = time.perf_counter() - start  # from the first publish call to the consumer's end
    return int(count) / max(float(span), 1e-9), int(count) / elapsed, int(count)


def raw_pyzmq(n: int) -> float:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)
    body = {"topic": "org.debian.dev.bench.message.log", "msg_id": "2026-x", "i": 1,
            "timestamp": 0, "username": "bench"}
    done: list[float] = []

    def receive() -> None:
        for _ in range(n):
            sub.recv_multipart()
        done.append(time.perf_counter())

    thread = threading.Thread(target=receive)
    thread.start()
    start = time.perf_counter()
    for i in range(n):
        body["msg"] = {"log": f"event {i}"}
        pub.send_multipart((b"org.debian.dev.bench.message.log",
                            json.dumps(body, sort_keys=True).encode()))
    thread.join(120)
    pub.close(0)
    sub.close(0)
    ctx.destroy(0)
    return n / (done[0] - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    n = args.events
    print(f"busgate bus core benchmark, {n} events, {os.cpu_count()} cores")
    rate, spooled = durable_path(n)
    print(f"durable path  spool->outbox->ZeroMQ->subscriber  {rate:>10,.0f} events/s "
          f"(busgate publish spooled {n} in {spooled:.2f} s)")
    print(f"publisher alone  outbox->ZeroMQ->subscriber      {publisher_alone(n):>10,.0f} events/s")
    p50, p99, worst = latency(args.runs)
    print(f"latency  `busgate publish --message` start -> subscriber ({args.runs} runs)  "
          f"p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {worst:.1f} ms", end="", flush=True)
    try:
        print(f"; a process calling stock fedmsg's publish, start -> receipt (median of 10) "
              f"{fedmsg_start_latency(10):.0f} ms")
    except Exception as exc:
        print(f", stock fedmsg: could not run ({exc})")
    try:
        fed_rate, fed_overall, fed_count = stock_fedmsg(n)
        print(f"stock fedmsg 1.1.7 publish->tail_messages        {fed_rate:>10,.0f} msgs/s "
              f"between first and last receipt, {fed_overall:,.0f} msgs/s from the first "
              f"publish call to the consumer's exit (received {fed_count} of {n}; "
              "non-durable, unsigned, publisher already running)")
    except Exception as exc:  # fedmsg not installed: say so, do not hide it
        print(f"stock fedmsg: could not run ({exc})")
    print(f"raw pyzmq PUB/SUB                                {raw_pyzmq(n):>10,.0f} msgs/s")


if __name__ == "__main__":
    main()
