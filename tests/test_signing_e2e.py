"""Signed bus end to end: ``busgate run`` signs what it stores (heartbeats too),
``busgate tail`` checks every message, prints a one-line warning per refused one, and
what replay serves is the stored, signed envelope. ``busgate keys`` makes and checks keys."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
import zmq

from gateway import envelope as env
from gateway import runtime
from gateway.verify import Verifier
from tests.conftest import BUSGATE, REPO, free_port
from tests.signing_helpers import PUBLISHER_CN, Pki, envelope, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _signing(pki: Pki, backend: str) -> dict:
    table = {"backend": backend, "ca": str(pki.ca), "crl": str(pki.crl),
             "keyring": [str(pki.keyring)], "routing_policy": str(pki.policy),
             "routing_nitpicky": True}
    if backend == "x509":
        table |= {"cert": str(pki.cert), "key": str(pki.key)}
    else:
        table["key"] = str(pki.pgp_key)
    return table


@pytest.mark.parametrize("backend", ["x509", "openpgp"])
def test_tail_checks_signatures_and_warns_on_each_refused_message(daemon, pki, backend):
    proc, settings = daemon(signing=_signing(pki, backend))
    rogue_port = free_port()
    ctx = zmq.Context()
    rogue = ctx.socket(zmq.PUB)
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.bind(f"tcp://127.0.0.1:{rogue_port}")
    tail = subprocess.Popen([*BUSGATE, "tail", "--json", "--count", "1", "--timeout", "30",
                             "--topic", "org.debian.dev.myapp.", "--endpoint",
                             f"tcp://127.0.0.1:{rogue_port}"],
                            env=proc.env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(tail.stderr), daemon=True)
    reader.start()
    forged = envelope(seq_id=5, topic="org.debian.dev.myapp.package.accept")  # unsigned
    try:
        deadline = time.monotonic() + 15
        while not any("rejected" in e for e in errors) and time.monotonic() < deadline:
            rogue.send_multipart(env.encode(forged))
            time.sleep(0.02)
        subprocess.run([*BUSGATE, "publish", "--modname", "myapp", "--topic", "package.accept",
                        "--json-input"], input=json.dumps({"source": "hebcal"}), text=True,
                       env=proc.env, cwd=REPO, check=True, timeout=30)
        out = tail.stdout.read()
        tail.wait(30)
    finally:
        tail.kill()
        rogue.close(0)
        ctx.term()
    reader.join(5)
    assert tail.returncode == 0, "".join(errors)
    warning = next(e for e in errors if "rejected" in e)
    assert warning.startswith("busgate tail: rejected org.debian.dev.myapp.package.accept "
                              "seq_id 5 from tcp://127.0.0.1:") and "unsigned" in warning
    assert warning.count("\n") == 1
    printed = json.loads(out)
    assert printed["crypto"] == backend and printed["msg"] == {"source": "hebcal"}
    store = runtime.open_store(settings)
    (stored,) = store.envelopes("seq_id = ?", [printed["seq_id"]], 2)
    assert json.loads(stored) == printed  # replay serves the stored, signed envelope
    check = Verifier(ca=str(pki.ca), crl=str(pki.crl), keyring=[str(pki.keyring)])
    identity = check.check(json.loads(stored), replayed=True)
    assert identity == (PUBLISHER_CN if backend == "x509" else pki.pgp_fpr)


def test_heartbeats_are_signed(daemon, pki):
    _proc, settings = daemon(signing=_signing(pki, "x509"))
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"org.debian.dev.busgate.publisher.heartbeat")
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    sub.connect(settings.zmq.publish)
    try:
        frames = sub.recv_multipart()
    finally:
        sub.close(0)
        ctx.term()
    beat = env.decode(frames)
    verifier = Verifier(ca=str(pki.ca), crl=str(pki.crl), routing_policy=str(pki.policy),
                        nitpicky=True)
    assert verifier.check(beat) == PUBLISHER_CN


def test_keys_command_makes_keys_and_checks_a_policy(tmp_path, pki):
    def keys(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*BUSGATE, "keys", *args], capture_output=True, text=True,
                              cwd=REPO, timeout=60)

    assert keys("ca", str(tmp_path / "ca")).returncode == 0
    made = keys("x509", str(tmp_path / "pub"), "--ca", str(tmp_path / "ca"), "--cn",
                "git.example.org")
    assert made.returncode == 0 and "x509 CN=git.example.org" in made.stdout
    assert keys("ca", str(tmp_path / "ca")).returncode == 2  # never overwrites a key
    pgp = keys("openpgp", str(tmp_path / "pgp"), "--name", "git", "--uid", "git <g@x.org>")
    fpr = pgp.stdout.splitlines()[-1].split()[1]
    assert pgp.returncode == 0 and len(fpr) == 40
    assert oct((tmp_path / "pgp" / "git.key").stat().st_mode & 0o777) == "0o600"
    shown = keys("show", str(tmp_path / "pgp" / "git.pub.asc"))
    assert fpr in shown.stdout
    revoked = keys("revoke", "--ca", str(tmp_path / "ca"),
                   str(tmp_path / "pub" / "git.example.org.crt"))
    assert revoked.returncode == 0 and "revoked=" in revoked.stdout
    config = tmp_path / "busgate.toml"
    config.write_text(f'[signing]\nrouting_policy = "{pki.policy}"\n'
                      f'keyring = ["{pki.keyring}"]\nrouting_nitpicky = true\n')
    ok = keys("--config", str(config), "policy", "--topic",
              "org.debian.dev.dak.upload.accepted", "--signer", PUBLISHER_CN)
    assert ok.returncode == 0 and "allowed by prefix org.debian.dev.dak" in ok.stdout
    no = keys("--config", str(config), "policy", "--topic", "org.debian.dev.x.y.z",
              "--signer", PUBLISHER_CN)
    assert no.returncode == 1 and "refused (underspecified)" in no.stdout
    listing = keys("--config", str(config), "policy")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert f"org.debian.dev.dak {pki.pgp_fpr}" in listing.stdout
    stray = tmp_path / "stray.toml"
    stray.write_text(f'[routing]\n"org.debian.dev.dak" = ["{"A" * 40}"]\n')
    missing = keys("--config", str(config), "policy", "--file", str(stray))
    assert missing.returncode == 1 and "not in the keyring" in missing.stdout


@pytest.mark.parametrize("table, needle", [
    ({"backend": "x509", "cert": "CERT", "key": "ROGUE_KEY"}, "is not the key of"),
    ({"backend": "openpgp", "key": "CERT"}, "no usable OpenPGP signing key"),
    ({"ca": "KEY"}, "holds no PEM certificate"),
    ({"keyring": ["POLICY"]}, "not an OpenPGP keyring"),
])
def test_check_config_and_run_refuse_unusable_keys(make_settings, pki, table, needle):
    names = {"CERT": pki.cert, "ROGUE_KEY": pki.rogue_key, "KEY": pki.key,
             "POLICY": pki.policy}
    fixed = {k: ([str(names[x]) for x in v] if isinstance(v, list) else str(names.get(v, v)))
             for k, v in table.items()}
    settings = make_settings(signing=fixed)
    for command in ("check-config", "run"):
        done = subprocess.run([*BUSGATE, "--config", settings.loaded_from[0], command],
                              capture_output=True, text=True, cwd=REPO, timeout=60)
        assert done.returncode == 2, (command, done.stderr)
        assert needle in done.stderr and "signing." in done.stderr


def test_gap_repaired_by_replay_is_verified_with_its_original_signature(daemon, pki):
    """Replay serves the stored signature; repaired messages are verified (and exempt
    from the age window: they were asked for), the live one is checked in full."""
    from gateway import discovery
    from gateway.subscriber import Subscriber

    proc, settings = daemon(signing=_signing(pki, "x509"))

    def publish(n: int) -> None:
        subprocess.run([*BUSGATE, "publish", "--modname", "myapp", "--topic", "package.accept",
                        "--message", f"m{n}"], env=proc.env, cwd=REPO, check=True, timeout=30)

    for n in range(3):
        publish(n)
    store = runtime.open_store(settings)
    deadline = time.monotonic() + 10
    while store.published_seq_id() < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    # Older than the 2.5 s window below. The envelope's timestamp is whole seconds, so a
    # live message may look up to 1 s older than it is: the window leaves it 1.5 s more.
    time.sleep(3.6)
    check = Verifier(ca=str(pki.ca), crl=str(pki.crl), routing_policy=str(pki.policy),
                     nitpicky=True, max_age=2.5)
    with Subscriber(discovery.discover(settings), topics=["org.debian.dev.myapp."],
                    resume_from=0, verifier=check) as sub:
        got = []
        for n in range(3, 200):  # until the subscription is up
            publish(n)
            got += list(sub.messages(timeout=0.3))
            if got:
                break
        got += list(sub.messages(count=max(0, 4 - len(got)), timeout=5))
    seqs = [m.seq_id for m in got]
    assert len(seqs) >= 4 and seqs == list(range(1, len(seqs) + 1))
    first_live = next(i for i, m in enumerate(got) if not m.replayed)
    assert first_live >= 3 and all(m.replayed for m in got[:first_live])
    assert sub.stats.rejected == {}
    stored = [json.loads(s) for s in store.envelopes("seq_id <= ?", [3], 10)]
    assert [m.envelope for m in got[:3]] == stored
