"""AMQP publishing side by side: busgate's outbox -> RabbitMQ -> a consumer, against
stock fedora-messaging ``api.publish`` and plain pika (one confirm per message, and
confirms batched by 100), ~200-byte bodies, every message confirmed. The pika
variants send the same properties and headers busgate sends (made beforehand, not
timed), so all but fedora-messaging carry the same bytes.

Each variant's time runs from the first publish until a consumer (a separate
process, plain pika, the same for all) has received every message. Reps are
interleaved (A B C D, A B C D, ...) and the median of each is printed with the
machine's load. Needs RabbitMQ on 127.0.0.1:5672 (guest/guest); a vhost of its
own is made and deleted.

busgate also runs with its outbox signed (x509, openpgp; signed when the outbox is
filled, not timed): those messages carry the ``busgate_envelope`` header (signature
and signed fields), so the figure shows what the bigger headers cost on the wire.
The bytes of one message's properties (headers included) are printed per variant.

    .venv/bin/python bench/amqp.py [--events 20000] [--slow-events 1000] [--reps 3]
                                   [--no-signed]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BODY_PAD = "x" * 150  # the JSON body is ~200 bytes
QUEUE = "bench"
CONSUMER = r"""
import sys, pika
url, queue, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
ch.basic_qos(prefetch_count=2000)
got = 0
print("ready", flush=True)
for method, props, body in ch.consume(queue, inactivity_timeout=120):
    if method is None:
        break
    got += 1
    if got % 500 == 0 or got == n:
        ch.basic_ack(method.delivery_tag, multiple=True)
    if got == n:
        break
print("done", got, flush=True)
conn.close()
"""


def body(i: int) -> dict:
    return {"source": "hebcal", "version": f"4.{i}-1", "pad": BODY_PAD}


def wire_properties(i: int):  # type: ignore[no-untyped-def]
    """What busgate puts on the wire (message_id, the fedora-messaging headers), so the
    pika variants carry the same properties as busgate's messages."""
    import pika

    from gateway.transports.amqp_wire import to_amqp

    wire = to_amqp({"topic": "org.debian.dev.dak.package.accept", "msg": body(i),
                    "msg_id": f"2026-{uuid.uuid4()}", "timestamp": int(time.time()),
                    "seq_id": i + 1, "publisher": "bench",
                    "publisher_epoch": "0123456789abcdef0123456789abcdef"})
    return wire.body, pika.BasicProperties(**wire.properties())


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


class Consumer:
    def __init__(self, url: str, n: int):
        self.proc = subprocess.Popen([sys.executable, "-c", CONSUMER, url, QUEUE, str(n)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def wait(self) -> float:
        line = self.proc.stdout.readline().split()
        self.proc.wait(120)
        assert line[:1] == ["done"], line
        return time.perf_counter()


#: Bytes of one publish besides its body (method, properties with headers, framing),
#: per signing backend.
HEADER_BYTES: dict[str, int] = {}


def signing_tables(tmp: Path) -> dict[str, str]:
    """``[signing]`` tables for busgate's signed variants (keys made with gateway.keygen)."""
    from gateway import keygen

    keygen.make_ca(tmp / "ca", "bench CA")
    cert, key = keygen.make_cert(tmp / "pub", tmp / "ca", "bench.example.org")
    pgp_key, _, _ = keygen.make_openpgp(tmp / "pgp", "bench", "bench <bench@example.org>")
    return {"x509": f'backend = "x509"\ncert = "{cert}"\nkey = "{key}"\n',
            "openpgp": f'backend = "openpgp"\nkey = "{pgp_key}"\n'}


def run_busgate(url: str, vhost: str, n: int, tmp: Path, signing: str = "") -> float:
    from gateway import config, runtime
    from gateway.amqp_outbox import AmqpPublisher
    from gateway.event import Event
    from gateway.transports import amqp_frames
    from gateway.transports.amqp_wire import to_amqp

    state = tmp / f"busgate-{uuid.uuid4().hex}"
    path = state / "busgate.toml"
    state.mkdir()
    path.write_text(f'[state]\ndir = "{state}"\n[amqp]\nenabled = true\nvhost = "{vhost}"\n'
                    + (f"[signing]\n{signing}" if signing else ""))
    settings = config.load(path)
    store = runtime.open_store(settings)
    with store.transaction() as tx:
        tx.add_events([Event(service="dak", object="package", event="accept", key=f"{state}{i}",
                             body=body(i)) for i in range(n)])
    wire = to_amqp(json.loads(store.rows_after(0, 1)[0].envelope))
    frames = amqp_frames.publish(1, "amq.topic", wire, 131072)
    name = signing.split('"')[1] if signing else "none"
    HEADER_BYTES[name] = len(frames) - len(wire.body)  # method + properties + framing
    consumer = Consumer(url, n)

    async def publish() -> float:
        publisher = AmqpPublisher(settings, store)
        task = asyncio.create_task(publisher.run())
        await publisher.connected.wait()  # like the others: timed from an open channel
        start = time.perf_counter()
        while publisher.confirmed_seq < n:
            await asyncio.sleep(0.002)
            if task.done():
                task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return start

    start = asyncio.run(publish())
    end = consumer.wait()
    store.close()
    shutil.rmtree(state)
    return n / (end - start)


def run_fedora_messaging(url: str, n: int, tmp: Path) -> float:
    conf = tmp / "fm.toml"
    conf.write_text(f'amqp_url = "{url}"\npublish_exchange = "amq.topic"\n'
                    'callback = "none:none"\n[client_properties]\napp = "bench"\n')
    consumer = Consumer(url, n)
    script = (
        "import sys,time\n"
        "from fedora_messaging import api, message\n"
        "n=int(sys.argv[1]); pad=sys.argv[2]\n"
        "msgs=[message.Message(topic='org.debian.dev.dak.package.accept',"
        "body={'source':'hebcal','version':f'4.{i}-1','pad':pad}) for i in range(n)]\n"
        "api.publish(msgs[0])\n"
        "print(time.perf_counter(), flush=True)\n"
        "for m in msgs[1:]: api.publish(m)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(n), BODY_PAD], check=True,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "FEDORA_MESSAGING_CONF": str(conf)})
    start = float(proc.stdout.split()[0])
    end = consumer.wait()
    return n / (end - start)


def run_pika_each(url: str, n: int) -> float:
    import pika

    consumer = Consumer(url, n)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()
    messages = [wire_properties(i) for i in range(n)]
    start = time.perf_counter()
    for payload, props in messages:
        ch.basic_publish("amq.topic", "org.debian.dev.dak.package.accept", payload, props,
                         mandatory=True)
    end = consumer.wait()
    conn.close()
    return n / (end - start)


def run_pika_batched(url: str, n: int, batch: int = 100) -> float:
    """pika's asynchronous connection: publish ``batch``, wait for all their confirms."""
    import pika

    consumer = Consumer(url, n)
    messages = [wire_properties(i) for i in range(n)]
    state = {"sent": 0, "acked": 0, "start": 0.0}
    done = threading.Event()

    def send_batch(ch) -> None:  # type: ignore[no-untyped-def]
        for _ in range(min(batch, n - state["sent"])):
            payload, props = messages[state["sent"]]
            ch.basic_publish("amq.topic", "org.debian.dev.dak.package.accept", payload, props,
                             mandatory=True)
            state["sent"] += 1

    def on_ack(frame) -> None:  # type: ignore[no-untyped-def]
        tag = frame.method.delivery_tag
        if frame.method.multiple:
            state["acked"] = tag
        else:
            state["acked"] = max(state["acked"], tag)
        if state["acked"] == state["sent"]:
            if state["sent"] == n:
                conn.close()
                done.set()
            else:
                send_batch(channel_box[0])

    channel_box: list = []

    def on_channel(ch) -> None:  # type: ignore[no-untyped-def]
        channel_box.append(ch)
        ch.confirm_delivery(on_ack)
        state["start"] = time.perf_counter()
        send_batch(ch)

    conn = pika.SelectConnection(pika.URLParameters(url),
                                 on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
                                 on_close_callback=lambda c, _: c.ioloop.stop())
    conn.ioloop.start()
    end = consumer.wait()
    return n / (end - state["start"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--slow-events", type=int, default=1000,
                        help="messages for the two one-confirm-at-a-time variants")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-signed", action="store_true",
                        help="leave out busgate's signed (x509, openpgp) variants")
    args = parser.parse_args()
    import pika

    vhost = f"busgate-bench-{uuid.uuid4().hex[:8]}"
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    rabbitmqctl("add_vhost", vhost)
    results: dict[str, list[float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="busgate-bench-amqp-"))
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        ch.queue_declare(QUEUE, durable=True)
        ch.queue_bind(QUEUE, "amq.topic", "#")
        conn.close()
        tables = {} if args.no_signed else signing_tables(tmp / "keys")
        signed = {f"busgate, {name}-signed outbox -> consumer":
                  (args.events, lambda t=table: run_busgate(url, vhost, args.events, tmp, t))
                  for name, table in tables.items()}
        variants = {
            "busgate outbox -> consumer (pipelined confirms)":
                (args.events, lambda: run_busgate(url, vhost, args.events, tmp)),
            **signed,
            "fedora-messaging api.publish":
                (args.slow_events, lambda: run_fedora_messaging(url, args.slow_events, tmp)),
            "pika, one confirm per message":
                (args.slow_events, lambda: run_pika_each(url, args.slow_events)),
            "pika, confirms batched by 100":
                (args.events, lambda: run_pika_batched(url, args.events)),
        }
        for rep in range(args.reps):
            for name, (_, run) in variants.items():
                rate = run()
                results.setdefault(name, []).append(rate)
                print(f"rep {rep + 1} {name}: {rate:,.0f} msg/s", flush=True)
        load = os.getloadavg()
        print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
              f"({os.cpu_count()} CPUs); medians of {args.reps} interleaved reps, "
              "~200-byte bodies, every message confirmed and consumed")
        print(f"{'variant':<50} {'messages':>8} {'msg/s':>9}")
        base = statistics.median(results["fedora-messaging api.publish"])
        for name, rates in results.items():
            median = statistics.median(rates)
            print(f"{name:<50} {variants[name][0]:>8} {median:>9,.0f}  "
                  f"({median / base:.1f}x fedora-messaging)")
        print("bytes of one busgate publish besides its body: " + ", ".join(
            f"{name} {size}" for name, size in HEADER_BYTES.items()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        rabbitmqctl("delete_vhost", vhost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
