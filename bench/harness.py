"""Shared parts of the benches: a gateway from any code tree, a checking subscriber,
stock fedmsg and raw pyzmq runs with the same bodies, medians with the load.

Honesty rules the benches follow: every figure is a median of interleaved
repetitions (tree A, tree B, fedmsg, pyzmq, then again), the 1-minute load is
recorded per repetition, ratios are taken within a repetition (same load), and
every received message is checked (each ``msg_id`` once, ``seq_id`` contiguous).
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gateway import config, discovery, heartbeat  # noqa: E402
from gateway.subscriber import Subscriber  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load() -> float:
    """The 1-minute load average (recorded beside every repetition)."""
    return os.getloadavg()[0]


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], p: float) -> float:
    """The nearest-rank percentile: p99 of 100 samples is the worst but one (``int(p * n)``
    was the worst of 100, so one sample descheduled on the shared machine set the p99)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered), max(1, math.ceil(p * len(ordered)))) - 1]


def write_config(root: Path, extra: str = "") -> Path:
    path = root / "busgate.toml"
    path.write_text(textwrap.dedent(f"""
        [state]
        dir = "{root / 'var'}"
        [zmq]
        publish = "tcp://127.0.0.1:{free_port()}"
        replay = "tcp://127.0.0.1:{free_port()}"
        heartbeat_interval = 1.0
    """) + textwrap.dedent(extra))
    return path


@dataclass
class Check:
    """What a checking subscriber saw: every msg_id once, seq_ids contiguous."""

    received: int = 0
    duplicates: int = 0
    gaps: int = 0
    replayed: int = 0
    last_seq: int = 0
    msg_ids: set[str] = field(default_factory=set)

    def add(self, envelope: dict[str, Any], replayed: bool) -> None:
        self.received += 1
        self.replayed += replayed
        msg_id = envelope["msg_id"]
        if msg_id in self.msg_ids:
            self.duplicates += 1
        self.msg_ids.add(msg_id)
        seq = envelope["seq_id"]
        if self.last_seq and seq != self.last_seq + 1:
            self.gaps += 1
        self.last_seq = seq

    def verdict(self) -> str:
        ok = not (self.duplicates or self.gaps)
        return ("ok" if ok else "FAILED") + (f" ({self.duplicates} duplicate msg_ids, "
                                            f"{self.gaps} seq_id gaps, {self.replayed} "
                                            "replayed)" if not ok or self.replayed else "")


class Gateway:
    """``busgate run`` from one code tree in a temp dir, with a joined subscriber."""

    def __init__(self, tree: Path, extra_config: str = ""):
        self.tree = tree
        self.root = Path(tempfile.mkdtemp(prefix="bg-bench-"))
        self.config_path = write_config(self.root, extra_config)
        self.settings = config.load(self.config_path)
        self.env = {**os.environ, "BUSGATE_CONFIG": str(self.config_path),
                    "PYTHONPATH": str(tree)}
        log = self.root / "daemon.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run"], env=self.env,
                                         cwd=tree, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while b"publishing on" not in log.read_bytes():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                raise SystemExit(f"daemon did not start: {log.read_text()}")
            time.sleep(0.02)
        self.sub = Subscriber(discovery.discover(self.settings),
                              heartbeat_topic=heartbeat.topic(self.settings.topic_prefix))
        for _ in range(100):
            self.run("publish", "--message", "probe")
            if list(self.sub.messages(count=1, timeout=0.2)):
                break
        else:
            self.close()
            raise SystemExit("subscriber never joined")
        list(self.sub.messages(idle=0.2, timeout=2))  # late probes
        self.check = Check()

    def run(self, *args: str, stdin: bytes = b"") -> None:
        subprocess.run([sys.executable, "-m", "gateway", *args], input=stdin, env=self.env,
                       cwd=self.tree, check=True, capture_output=True)

    def popen(self, args: list[str], **kw: Any) -> subprocess.Popen:
        return subprocess.Popen(args, env=self.env, cwd=self.tree, **kw)

    def receive(self, n: int, timeout: float = 600) -> float:
        """Receive and check ``n`` messages; return the monotonic time of the last."""
        got = 0
        for message in self.sub.messages(count=n, timeout=timeout):
            self.check.add(message.envelope, message.replayed)
            got += 1
        if got != n:
            raise SystemExit(f"received {got} of {n} from {self.tree}")
        return time.monotonic()

    def close(self) -> None:
        self.sub.close()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


# -- busgate shapes --------------------------------------------------------------------
def bulk(tree: Path, data: bytes, publishers: int) -> tuple[float, str]:
    """Events/s of ``publishers`` concurrent ``busgate publish --json-input`` processes
    sharing ``data``'s lines, from their start to the last receipt; and the check."""
    lines = data.splitlines(keepends=True)
    gateway = Gateway(tree)
    try:
        start = time.monotonic()
        last = publish_bulk(gateway, lines, publishers)
        return len(lines) / (last - start), gateway.check.verdict()
    finally:
        gateway.close()


def publish_bulk(gateway: Gateway, lines: list[bytes], publishers: int) -> float:
    """Run ``publishers`` concurrent ``busgate publish --json-input`` processes sharing
    ``lines``; the monotonic time the subscriber got the last event."""
    parts = [b"".join(lines[i::publishers]) for i in range(publishers)]
    procs = [gateway.popen([sys.executable, "-m", "gateway", "publish", "--json-input",
                            "--modname", "bench", "--topic", "package.accept"],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
             for _ in parts]
    for proc, part in zip(procs, parts, strict=True):
        proc.stdin.write(part)
        proc.stdin.close()
    last = gateway.receive(len(lines))
    if any(proc.wait() != 0 for proc in procs):
        raise SystemExit("busgate publish failed")
    return last


WRITER = """
import json, sys, time
from gateway.spool import Spool
spool, writer, items = Spool(sys.argv[1]), sys.argv[2], int(sys.argv[3])
body = json.loads(sys.stdin.read())
start = time.monotonic()
for n in range(items):
    record = {"service": "bench", "object": "package", "event": "accept",
              "key": f"one:{writer}:{n}", "body": {**body, "n": n}}
    spool.deliver("events", json.dumps(record).encode() + b"\\n")
print(time.monotonic() - start)
"""


def one_event_items(tree: Path, body: dict[str, Any], writers: int,
                    items: int) -> tuple[float, float, str]:
    """(events/s reaching the subscriber, items/s the writers spooled, check) for
    ``writers`` processes each spooling ``items`` one-event items (the MTA pipe's shape)."""
    gateway = Gateway(tree)
    try:
        start = time.monotonic()
        procs = [gateway.popen([sys.executable, "-c", WRITER, str(gateway.settings.spool_dir),
                                str(w), str(items)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE) for w in range(writers)]
        for proc in procs:
            proc.stdin.write(json.dumps(body).encode())
            proc.stdin.close()
        last = gateway.receive(writers * items)
        spooling = max(float(p.stdout.read()) for p in procs)
        for proc in procs:
            proc.wait()
        total = writers * items
        return total / (last - start), total / spooling, gateway.check.verdict()
    finally:
        gateway.close()


def command_latency(tree: Path, runs: int) -> list[float]:
    """ms from starting ``busgate publish --message`` to the subscriber's receipt."""
    gateway = Gateway(tree)
    samples = []
    try:
        for i in range(runs):
            start = time.monotonic()
            gateway.run("publish", "--message", f"lat {i}")
            samples.append((gateway.receive(1) - start) * 1000)
    finally:
        gateway.close()
    return samples


API_CALLER = """
import json, sys, time
from gateway import api
publisher = api.Publisher(modname="bench")
body = json.loads(sys.stdin.readline())
for line in sys.stdin:
    start = time.monotonic()
    publisher.publish("package.accept", {**body, "n": int(line)})
    print(start, flush=True)
"""


def api_latency(tree: Path, body: dict[str, Any], runs: int) -> list[float]:
    """ms from a long-lived process's ``api.Publisher.publish`` call to receipt."""
    gateway = Gateway(tree)
    samples = []
    caller = gateway.popen([sys.executable, "-c", API_CALLER], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        caller.stdin.write(json.dumps(body) + "\n")
        for i in range(runs + 3):
            caller.stdin.write(f"{i}\n")
            caller.stdin.flush()
            start = float(caller.stdout.readline())
            received = gateway.receive(1)
            if i >= 3:  # the first calls import and open the spool
                samples.append((received - start) * 1000)
            time.sleep(0.01)
    finally:
        caller.kill()
        caller.wait()
        gateway.close()
    return samples


# -- stock fedmsg 1.1.7 (not durable) --------------------------------------------------
FEDMSG_COMMON = """
import json, sys, time, fedmsg.core
port, n = int(sys.argv[1]), int(sys.argv[2])
def context(**kw):
    return fedmsg.core.FedMsgContext(
        active=False, topic_prefix="org.debian", environment="dev",
        endpoints={"bench": ["tcp://127.0.0.1:%d" % port]}, high_water_mark=0,
        io_threads=1, zmq_linger=1000, timeout=2, zmq_enabled=True,
        sign_messages=False, validate_signatures=False, **kw)
"""

FEDMSG_PUBLISHER = FEDMSG_COMMON + """
ctx = context(name="bench", post_init_sleep=0.5)
body = json.loads(sys.stdin.readline())
print("bound", flush=True)
while True:  # probes until the consumer has joined
    ctx.publish(topic="probe", msg={"probe": 1}, modname="bench")
    if sys.stdin.readline().strip() == "go":
        break
if n:
    for i in range(n):
        ctx.publish(topic="package.accept", msg={**body, "n": i}, modname="bench")
else:  # latency: one message per stdin line, its start time printed first
    for line in sys.stdin:
        start = time.monotonic()
        ctx.publish(topic="package.accept", msg={**body, "n": int(line)}, modname="bench")
        print(start, flush=True)
sys.stdin.readline()  # stay up (and keep sending what is queued) until told to go
"""

FEDMSG_CONSUMER = FEDMSG_COMMON + """
ctx = context(name=None, mute=True, post_init_sleep=0)
count, joined = 0, False
for name, ep, topic, msg in ctx.tail_messages():
    if "probe" in msg["msg"]:
        if not joined:
            print("joined", flush=True)
            joined = True
        continue
    count += 1
    if n == 0:
        print(time.monotonic(), flush=True)
    elif count >= n:
        break
print(count, time.monotonic(), flush=True)
sys.stdin.readline()  # stay up (its CPU readable in /proc) until told to go
"""


class _Pair:
    """A publisher child and a consumer child, joined, both alive until :meth:`close`.

    The timed part runs from :meth:`go` to the consumer's last receipt (:meth:`finish`);
    start-up and join probes come before it, so a caller can read each child's CPU from
    /proc around exactly that part.
    """

    pub: subprocess.Popen
    con: subprocess.Popen

    def go(self) -> None:
        self.pub.stdin.write("go\n")
        self.pub.stdin.flush()

    def finish(self, n: int) -> float:
        """The monotonic time of the consumer's n-th receipt (it must get exactly n)."""
        if not select.select([self.con.stdout], [], [], max(120.0, n / 1000))[0]:
            raise RuntimeError(f"{type(self).__name__} consumer did not get {n} messages")
        out = self.con.stdout.readline().split()
        if not out or int(out[0]) != n:
            raise RuntimeError(f"{type(self).__name__} consumer got {out} of {n}")
        return float(out[1])

    def close(self) -> None:
        for proc in (self.pub, self.con):
            proc.kill()
            proc.wait()


class _Fedmsg(_Pair):
    def __init__(self, body: dict[str, Any], n: int):
        port = str(free_port())
        self.pub = subprocess.Popen([sys.executable, "-c", FEDMSG_PUBLISHER, port, str(n)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pub.stdin.write(json.dumps(body) + "\n")
        self.pub.stdin.flush()
        if self.pub.stdout.readline().strip() != "bound":
            raise RuntimeError("fedmsg publisher did not start")
        self.con = subprocess.Popen([sys.executable, "-c", FEDMSG_CONSUMER, port, str(n)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        while True:  # one probe per line, until the consumer says it got one
            self.pub.stdin.write("again\n")
            self.pub.stdin.flush()
            if select.select([self.con.stdout], [], [], 0.1)[0] and \
                    self.con.stdout.readline().strip() == "joined":
                break
        time.sleep(0.3)  # probes in flight drain


def stock_fedmsg(body: dict[str, Any], n: int) -> float:
    """msgs/s from fedmsg's first publish call to the consumer's n-th receipt."""
    run = _Fedmsg(body, n)
    try:
        start = time.monotonic()
        run.go()
        return n / (run.finish(n) - start)
    finally:
        run.close()


def fedmsg_latency(body: dict[str, Any], runs: int) -> list[float]:
    """ms from a long-lived fedmsg process's publish call to a tail_messages receipt."""
    run = _Fedmsg(body, 0)
    samples = []
    try:
        run.pub.stdin.write("go\n")
        for i in range(runs):
            run.pub.stdin.write(f"{i}\n")
            run.pub.stdin.flush()
            start = float(run.pub.stdout.readline())
            samples.append((float(run.con.stdout.readline()) - start) * 1000)
            time.sleep(0.01)
    finally:
        run.close()
    return samples


# -- raw pyzmq, JSON encoded (and decoded) per message ---------------------------------
RAW_SENDER = """
import json, select, sys, zmq
n = int(sys.argv[1])
body = json.loads(sys.stdin.readline())
sock = zmq.Context().socket(zmq.PUB)
sock.setsockopt(zmq.SNDHWM, 0)
print(sock.bind_to_random_port("tcp://127.0.0.1"), flush=True)
while not select.select([sys.stdin], [], [], 0.05)[0]:  # probes until the receiver joined
    sock.send_multipart((b"probe", b"{}"))
sys.stdin.readline()
sys.stdin.readline()  # go
topic = "org.debian.dev.bench.package.accept"
envelope = {"topic": topic, "msg_id": "2026-x", "i": 1, "timestamp": 0,
            "username": "bench", "seq_id": 0, "publisher": "bench"}
for i in range(n):
    envelope["msg"] = {**body, "n": i}
    envelope["seq_id"] = envelope["i"] = i + 1
    sock.send_multipart((topic.encode(), json.dumps(
        envelope, sort_keys=True, separators=(",", ":")).encode()))
sys.stdin.readline()  # stay up (and keep sending what is queued) until told to go
"""

RAW_RECEIVER = """
import json, sys, time, zmq
port, n = int(sys.argv[1]), int(sys.argv[2])
sock = zmq.Context().socket(zmq.SUB)
sock.setsockopt(zmq.RCVHWM, 0)
sock.setsockopt(zmq.SUBSCRIBE, b"")
sock.connect("tcp://127.0.0.1:%d" % port)
joined = False
count = 0
while count < n:
    topic, payload = sock.recv_multipart()
    envelope = json.loads(payload)
    if topic == b"probe":
        if not joined:
            print("joined", flush=True)
            joined = True
        continue
    count += 1
print(count, time.monotonic(), flush=True)
sys.stdin.readline()  # stay up (its CPU readable in /proc) until told to go
"""


class _RawPyzmq(_Pair):
    """A PUB child sending n canonical JSON envelopes (encoded per message) to a SUB
    child decoding each: the floor any JSON-over-ZeroMQ bus pays."""

    def __init__(self, body: dict[str, Any], n: int):
        self.pub = subprocess.Popen([sys.executable, "-c", RAW_SENDER, str(n)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pub.stdin.write(json.dumps(body) + "\n")
        self.pub.stdin.flush()
        port = self.pub.stdout.readline().strip()
        self.con = subprocess.Popen([sys.executable, "-c", RAW_RECEIVER, port, str(n)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.con.stdout.readline().strip() != "joined":
            self.close()
            raise RuntimeError("raw pyzmq receiver did not join")
        self.pub.stdin.write("joined\n")
        self.pub.stdin.flush()
        time.sleep(0.2)  # probes in flight drain


def raw_pyzmq(body: dict[str, Any], n: int) -> float:
    """msgs/s from the PUB child's go to the SUB child's n-th receipt."""
    run = _RawPyzmq(body, n)
    try:
        start = time.monotonic()
        run.go()
        return n / (run.finish(n) - start)
    finally:
        run.close()


def wait_indexed(store: Any, timeout: float = 300.0) -> None:
    """Until ``store``'s index file has every stored message (bounded by ``timeout``);
    at once for a store without ``index_lag`` (an older tree: its indexes are written
    with the message)."""
    index_lag = getattr(store, "index_lag", None)
    deadline = time.monotonic() + timeout
    while index_lag is not None and index_lag() > 0 and time.monotonic() < deadline:
        time.sleep(0.002)
