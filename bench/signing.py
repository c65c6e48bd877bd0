"""Signed bus throughput, side by side in one run.

* durable path end to end per signing backend: one `busgate publish` of N stdin lines
  -> spool -> outbox (signed as stored) -> ZeroMQ -> a subscriber that validates every
  message (CA+CRL, keyring, routing policy); events/s from the command's start to the
  last message accepted. Backends: none (no validation), x509, openpgp;
* stock fedmsg 1.1.7 with x509 signing (its publish re-reads the key per message) to
  a validating fedmsg consumer (fewer messages: it is slow);
* validation alone, one core: Verifier.check msgs/s per backend (and sign/s), per CPU
  second (the machine may be shared);
* CPU ms per event of the end-to-end runs (daemon, spool worker, `busgate publish`,
  subscriber), so that a loaded machine's figures can be read.

Reps are interleaved (none, x509, openpgp, fedmsg, none, ...) and medians of --reps are
printed with the load average before and after.

Usage: .venv/bin/python bench/signing.py [--events N] [--fedmsg-events M] [--reps R]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.throughput import free_port, make_settings, start_daemon  # noqa: E402
from gateway import config, discovery, envelope, heartbeat, keygen, verify  # noqa: E402
from gateway.signing import OpenPGPSigner, X509Signer  # noqa: E402
from gateway.subscriber import Subscriber  # noqa: E402

BUSGATE = [sys.executable, "-m", "gateway"]
CN = "bench.example.org"


def make_keys(root: Path) -> dict[str, str]:
    ca, _, crl = keygen.make_ca(root / "ca", "bench CA")
    cert, key = keygen.make_cert(root / "pub", root / "ca", CN)
    pgp_key, pgp_pub, fpr = keygen.make_openpgp(root / "pgp", "bench", "bench <b@example.org>")
    policy = root / "policy.toml"
    policy.write_text(f'[routing]\n"org.debian.dev" = ["{CN}", "{fpr}"]\n')
    return {"ca": str(ca), "crl": str(crl), "cert": str(cert), "key": str(key),
            "pgp_key": str(pgp_key), "pgp_pub": str(pgp_pub), "policy": str(policy)}


def settings_for(root: Path, backend: str, keys: dict[str, str]) -> config.Settings:
    signing = ""
    if backend != "none":
        key = keys["key"] if backend == "x509" else keys["pgp_key"]
        signing = textwrap.dedent(f"""
            [signing]
            backend = "{backend}"
            cert = "{keys['cert']}"
            key = "{key}"
            ca = "{keys['ca']}"
            crl = "{keys['crl']}"
            keyring = ["{keys['pgp_pub']}"]
            routing_policy = "{keys['policy']}"
            routing_nitpicky = true
        """)
    return make_settings(root, signing)


def _ticks(pid: int) -> int:
    """CPU ticks (user + system) of a process and its live children (the spool worker)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total


def _cpu_seconds(pid: int) -> float:
    import resource

    child = resource.getrusage(resource.RUSAGE_CHILDREN)  # `busgate publish`
    return (_ticks(pid) / os.sysconf("SC_CLK_TCK") + time.process_time()
            + child.ru_utime + child.ru_stime)


def busgate_path(backend: str, n: int, keys: dict[str, str]) -> tuple[float, float]:
    """(events/s end to end, CPU ms per event over daemon, worker, publish, subscriber)."""
    root = Path(tempfile.mkdtemp(prefix="bg-sign-"))
    settings = settings_for(root, backend, keys)
    proc = start_daemon(settings)
    env = {**os.environ, "BUSGATE_CONFIG": settings.loaded_from[0]}
    checker = verify.from_settings(settings.signing)
    try:
        with Subscriber(discovery.discover(settings), verifier=checker,
                        heartbeat_topic=heartbeat.topic(settings.topic_prefix)) as sub:
            for _ in range(100):
                subprocess.run([*BUSGATE, "publish", "--message", "probe"], env=env, check=True)
                if list(sub.messages(count=1, timeout=0.2)):
                    break
            else:
                raise SystemExit("subscriber never joined")
            data = "".join(f"event {i}\n" for i in range(n)).encode()
            start, cpu = time.perf_counter(), _cpu_seconds(proc.pid)
            subprocess.run([*BUSGATE, "publish"], input=data, env=env, check=True)
            got = sum(1 for _ in sub.messages(count=n, timeout=600, idle=60))
            elapsed = time.perf_counter() - start
            cpu = _cpu_seconds(proc.pid) - cpu
            if got != n or sum(sub.stats.rejected.values()):
                raise SystemExit(f"{backend}: received {got} of {n}, rejected "
                                 f"{sub.stats.rejected}")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)
    return n / elapsed, cpu * 1000 / n


FEDMSG_PUBLISHER = textwrap.dedent("""
    import sys, time, fedmsg.core
    port, n, ssldir, certname = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ctx = fedmsg.core.FedMsgContext(
        name="bench", active=False, topic_prefix="org.debian", environment="dev",
        endpoints={"bench": ["tcp://127.0.0.1:%d" % port]}, high_water_mark=0,
        io_threads=1, post_init_sleep=0.5, zmq_linger=1000, timeout=2, zmq_enabled=True,
        sign_messages=True, crypto_backend="x509", ssldir=ssldir,
        certnames={"bench": certname})
    print("bound", flush=True)
    sys.stdin.readline()
    for i in range(n):
        ctx.publish(topic="message.log", msg={"log": "event %d" % i}, modname="bench")
    time.sleep(1)
""")

FEDMSG_CONSUMER = textwrap.dedent("""
    import sys, time, fedmsg.core, fedmsg.crypto.x509
    assert fedmsg.crypto.x509.validate is not fedmsg.crypto.x509._disabled_validate, \\
        "fedmsg's x509 is disabled (pyOpenSSL >= 24.3)"
    port, n, ca, crl = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ctx = fedmsg.core.FedMsgContext(
        name=None, active=False, mute=True, topic_prefix="org.debian", environment="dev",
        endpoints={"bench": ["tcp://127.0.0.1:%d" % port]}, high_water_mark=0, io_threads=1,
        post_init_sleep=0, zmq_linger=0, timeout=10, zmq_enabled=True,
        validate_signatures=True, crypto_validate_backends=["x509"], ca_cert_location=ca,
        crl_location=crl, routing_nitpicky=True,
        routing_policy={"org.debian.dev.bench.message.log": [sys.argv[5]]})
    print("ready", flush=True)
    count = 0
    for name, ep, topic, msg in ctx.tail_messages():
        count += 1
        if count >= n:
            break
    print(count, flush=True)
""")


def stock_fedmsg(n: int, keys: dict[str, str]) -> float:
    port = free_port()
    ssldir = str(Path(keys["cert"]).parent)
    pub = subprocess.Popen([sys.executable, "-c", FEDMSG_PUBLISHER, str(port), str(n), ssldir,
                            CN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    con = subprocess.Popen([sys.executable, "-c", FEDMSG_CONSUMER, str(port), str(n),
                            keys["ca"], keys["crl"], CN], stdout=subprocess.PIPE, text=True)
    try:
        assert pub.stdout.readline().strip() == "bound"
        assert con.stdout.readline().strip() == "ready"
        time.sleep(2.0)  # fedmsg has no join signal: give the consumer time to subscribe
        start = time.perf_counter()
        pub.stdin.write("go\n")
        pub.stdin.flush()
        out, _ = con.communicate(timeout=max(120, n))
        elapsed = time.perf_counter() - start
    finally:
        pub.kill()
        con.kill()
    count = int(out.split()[-1])
    if count != n:
        raise SystemExit(f"stock fedmsg: received {count} of {n}")
    return n / elapsed


def validation(keys: dict[str, str], n: int = 3000) -> dict[str, tuple[float, float]]:
    """(sign/s, verify/s) per CPU second of one thread (process time, so that other
    load on the machine does not count), over distinct envelopes."""
    checker = verify.Verifier(ca=keys["ca"], crl=keys["crl"], keyring=[keys["pgp_pub"]],
                              routing_policy=keys["policy"], nitpicky=True)
    out = {}
    for name, signer in (("x509", X509Signer(keys["cert"], keys["key"])),
                         ("openpgp", OpenPGPSigner(keys["pgp_key"]))):
        envs = [envelope.build(topic="org.debian.dev.bench.message.log",
                               body={"log": f"event {i}", "n": i},
                               msg_id=envelope.msg_id_for(f"v{i}"), timestamp=int(time.time()),
                               i=i, username="bench", seq_id=i + 1, publisher="bench",
                               publisher_epoch="e" * 32) for i in range(n)]
        start = time.process_time()
        signed = [signer.sign(e) for e in envs]
        sign_rate = n / (time.process_time() - start)
        wire = [envelope.decode([e["topic"].encode(), envelope.canonical_json(e).encode()])
                for e in signed]
        start = time.process_time()
        for e in wire:
            checker.check(e)
        out[name] = (sign_rate, n / (time.process_time() - start))
    return out


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--fedmsg-events", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bg-sign-keys-"))
    try:
        keys = make_keys(root)
        print(f"signed bus benchmark: {args.events} events per busgate run, "
              f"{args.fedmsg_events} for stock fedmsg, {args.reps} interleaved reps, "
              f"{os.cpu_count()} cores; load {load()}")
        results: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        rows = ("none", "x509", "openpgp", "fedmsg")
        for rep in range(args.reps):
            for row in rows:
                if row == "fedmsg":
                    try:
                        rate = stock_fedmsg(args.fedmsg_events, keys)
                    except Exception as exc:  # fedmsg absent or its crypto disabled: say so
                        print(f"  stock fedmsg could not run: {exc}")
                        continue
                    used = ""
                else:
                    rate, per_event = busgate_path(row, args.events, keys)
                    cpu.setdefault(row, []).append(per_event)
                    used = f", {per_event:.3f} CPU ms/event"
                results.setdefault(row, []).append(rate)
                print(f"  rep {rep + 1} {row:8} {rate:>10,.0f} events/s{used}  "
                      f"(load {load()})", flush=True)
        labels = {"none": "busgate unsigned, no validation",
                  "x509": "busgate x509 signed + validated",
                  "openpgp": "busgate openpgp signed + validated",
                  "fedmsg": "stock fedmsg 1.1.7 x509 signed + validated (non-durable)"}
        print("\nend to end (spool -> outbox -> sign -> ZeroMQ -> validating subscriber), "
              "median events/s:")
        for row in rows:
            if row in results:
                rates = results[row]
                spent = ""
                if row in cpu:
                    per = statistics.median(cpu[row])
                    spent = (f"  {per:.3f} CPU ms/event (CPU-bound ceiling "
                             f"{(os.cpu_count() or 1) / per * 1000:,.0f}/s on "
                             f"{os.cpu_count()} cores)")
                print(f"  {labels[row]:58} {statistics.median(rates):>10,.0f}   "
                      f"(reps: {', '.join(f'{r:,.0f}' for r in rates)}){spent}")
        print("\none core (per CPU second, no I/O):")
        for name, (sign_rate, check_rate) in validation(keys).items():
            print(f"  {name:8} sign {sign_rate:>8,.0f}/s   validate (Verifier.check) "
                  f"{check_rate:>8,.0f} msgs/s")
        print(f"load after: {load()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
