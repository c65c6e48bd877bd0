"""Signed envelopes: fedmsg interop both ways, OpenPGP checked by gpgv, the tamper
matrix (every field changed/removed/added, revoked, unknown, out of policy, stale)
refused with its reason and counted by a real subscriber, and the bounds."""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
import time

import pytest
import zmq

from gateway import envelope as env
from gateway import policy as routing
from gateway.discovery import Endpoint
from gateway.errors import ConfigError
from gateway.signing import OpenPGPSigner, X509Signer, make_signer, signed_bytes
from gateway.subscriber import Subscriber
from gateway.verify import MAX_SIGNATURE_CHARS, SignatureError, Verifier
from tests.conftest import IN_CI, free_port
from tests.signing_helpers import PUBLISHER_CN, ROGUE_CN, TOPIC, Pki, envelope, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def x509_signer(pki: Pki) -> X509Signer:
    return X509Signer(str(pki.cert), str(pki.key))


@pytest.fixture(scope="module")
def pgp_signer(pki: Pki) -> OpenPGPSigner:
    return OpenPGPSigner(str(pki.pgp_key))


@pytest.fixture(scope="module")
def verifier(pki: Pki) -> Verifier:
    return Verifier(ca=str(pki.ca), crl=str(pki.crl), keyring=[str(pki.keyring)],
                    routing_policy=str(pki.policy), nitpicky=True, max_age=3600)


def _fedmsg_crypto():  # type: ignore[no-untyped-def]
    """Stock fedmsg 1.1.7's crypto, or skip/fail saying why (its x509 needs pyOpenSSL<24.3)."""
    try:
        import fedmsg.crypto
        import fedmsg.crypto.x509
    except ImportError as exc:
        message = f"stock fedmsg 1.1.7 is not importable ({exc}); pip install -e '.[test]'"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    if fedmsg.crypto.x509.validate is fedmsg.crypto.x509._disabled_validate:
        message = ("fedmsg's x509 crypto disabled itself (pyOpenSSL >= 24.3 has no load_crl); "
                   "the test extra pins pyOpenSSL<24.3")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return fedmsg.crypto


def _fedmsg_config(pki: Pki, policy: dict[str, list[str]] | None = None) -> dict:
    return {"validate_signatures": True, "crypto_backend": "x509",
            "crypto_validate_backends": ["x509"], "ca_cert_location": str(pki.ca),
            "crl_location": str(pki.crl), "routing_nitpicky": True,
            "routing_policy": policy if policy is not None else {
                TOPIC: [PUBLISHER_CN], "org.debian.dev.git.push": [ROGUE_CN]}}


# -- format and interop ------------------------------------------------------------------

def test_x509_signature_has_fedmsgs_exact_form(pki, x509_signer):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    signed = x509_signer.sign(envelope())
    assert signed["crypto"] == "x509"
    for name in ("signature", "certificate"):
        lines = signed[name].split("\n")
        assert lines[-1] == "" and all(len(line) == 76 for line in lines[:-2])
        assert 0 < len(lines[-2]) <= 76
    cert = x509.load_pem_x509_certificate(base64.b64decode(signed["certificate"]))
    assert base64.b64decode(signed["certificate"]) == cert.public_bytes(
        serialization.Encoding.PEM)
    # the signed bytes are fedmsg.encoding.dumps of all but signature/certificate
    rest = {k: v for k, v in signed.items() if k not in ("signature", "certificate")}
    data = json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()
    assert data == signed_bytes(signed) and b"J\\u00f6rg" in data and b'"crypto":"x509"' in data
    cert.public_key().verify(base64.b64decode(signed["signature"]), data, padding.PKCS1v15(),
                             hashes.SHA1())  # noqa: S303 - fedmsg's digest


def test_stock_fedmsg_validates_busgate_x509_messages(pki, x509_signer):
    crypto = _fedmsg_crypto()
    config = _fedmsg_config(pki)
    signed = json.loads(env.canonical_json(x509_signer.sign(envelope())))  # over the wire
    assert crypto.validate(copy.deepcopy(signed), **config) is True
    tampered = copy.deepcopy(signed)
    tampered["seq_id"] += 1
    assert crypto.validate(tampered, **config) is False
    revoked = X509Signer(str(pki.revoked_cert), str(pki.revoked_key)).sign(envelope())
    assert crypto.validate(revoked, **_fedmsg_config(
        pki, {TOPIC: ["revoked.example.org"]})) is False
    # a valid signer outside fedmsg's routing policy
    assert crypto.validate(copy.deepcopy(signed), **_fedmsg_config(
        pki, {TOPIC: [ROGUE_CN]})) is False


def test_busgate_validates_stock_fedmsg_signed_messages(pki, verifier):
    crypto = _fedmsg_crypto()
    config = _fedmsg_config(pki)
    message = {"topic": TOPIC, "msg": {"source": "dpkg", "note": "caf\u00e9"},
               "timestamp": int(time.time()), "msg_id": "2026-" + "0" * 8 + "-0000-4000-8000-"
               + "0" * 12, "i": 1, "username": "dak"}
    signed = crypto.sign(message, ssldir=str(pki.cert.parent), certname=PUBLISHER_CN,
                         **config)
    wire = json.loads(json.dumps(signed))
    assert verifier.check(wire) == PUBLISHER_CN
    wire["msg"]["source"] = "dpkg2"
    with pytest.raises(SignatureError) as caught:
        verifier.check(wire)
    assert caught.value.reason == "bad-signature"


def test_sha256_option_signs_and_a_sha256_verifier_refuses_sha1(pki, x509_signer):
    strict = Verifier(ca=str(pki.ca), crl=str(pki.crl), hash_name="sha256")
    sha256 = X509Signer(str(pki.cert), str(pki.key), "sha256").sign(envelope())
    assert strict.check(sha256) == PUBLISHER_CN
    with pytest.raises(SignatureError, match="bad-signature"):
        strict.check(x509_signer.sign(envelope()))


def test_openpgp_signature_is_accepted_by_gpgv_with_the_exported_key(pki, pgp_signer,
                                                                      tmp_path):
    gpgv = shutil.which("gpgv")
    if gpgv is None:
        message = "gpgv is not installed (apt-get install gpgv)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    signed = pgp_signer.sign(envelope())
    assert signed["crypto"] == "openpgp" and "certificate" not in signed
    (tmp_path / "msg").write_bytes(signed_bytes(signed))
    (tmp_path / "msg.sig").write_bytes(base64.b64decode(signed["signature"]))
    import pysequoia

    (tmp_path / "key.gpg").write_bytes(bytes(pysequoia.Cert.from_file(str(pki.pgp_pub))))
    ok = subprocess.run([gpgv, "--keyring", str(tmp_path / "key.gpg"), str(tmp_path / "msg.sig"),
                         str(tmp_path / "msg")], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert pki.pgp_fpr[-16:] in ok.stderr.replace(" ", "").upper() or "Good" in ok.stderr
    (tmp_path / "msg").write_bytes(signed_bytes({**signed, "seq_id": 8}))
    bad = subprocess.run([gpgv, "--keyring", str(tmp_path / "key.gpg"),
                          str(tmp_path / "msg.sig"), str(tmp_path / "msg")],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0


def test_signing_covers_headers_and_replaces_an_old_signature(x509_signer, verifier):
    first = x509_signer.sign(envelope())
    again = x509_signer.sign(copy.deepcopy(first))  # re-signing does not sign the signature
    assert verifier.check(again) == PUBLISHER_CN
    first["headers"]["fedora_messaging_severity"] = 40
    with pytest.raises(SignatureError, match="bad-signature"):
        verifier.check(first)


# -- tamper matrix -------------------------------------------------------------------------

def _variants(signed: dict) -> list[tuple[str, dict, tuple[str, ...]]]:
    """(what, tampered envelope, acceptable reasons) for every field: changed, removed,
    plus a field added."""
    out = []
    for name, value in signed.items():
        removed = {k: v for k, v in signed.items() if k != name}
        if isinstance(value, bool) or value is None:
            changed = not value
        elif isinstance(value, int):
            changed = value + 1
        elif isinstance(value, str):
            changed = value[:-2] + ("A" if value[-2:-1] != "A" else "B") + value[-1:]
        elif isinstance(value, dict):
            changed = {**value, "extra": 1}
        else:
            changed = [value]
        # a missing signature is "unsigned" only when nothing of it is left
        why_removed = {"signature": ("malformed",), "certificate": ("malformed",),
                       "crypto": ("backend",), "timestamp": ("malformed",)}
        why_changed = {"signature": ("bad-signature", "malformed"),
                       "certificate": ("malformed", "unknown-signer"),
                       "crypto": ("backend",), "timestamp": ("bad-signature",),
                       "topic": ("bad-signature",)}
        out.append((f"{name} removed", removed, why_removed.get(name, ("bad-signature",))))
        out.append((f"{name} changed", {**signed, name: changed},
                    why_changed.get(name, ("bad-signature",))))
    out.append(("field added", {**signed, "extra": 0}, ("bad-signature",)))
    return out


@pytest.mark.parametrize("backend", ["x509", "openpgp"])
def test_every_field_changed_removed_or_added_is_refused(backend, x509_signer, pgp_signer,
                                                         verifier):
    signer = x509_signer if backend == "x509" else pgp_signer
    signed = json.loads(env.canonical_json(signer.sign(envelope())))
    assert verifier.check(copy.deepcopy(signed))
    variants = _variants(signed)
    assert len(variants) >= 2 * 11 + 1
    for what, tampered, reasons in variants:
        with pytest.raises(SignatureError) as caught:
            verifier.check(tampered)
            pytest.fail(f"{what}: accepted")
        assert caught.value.reason in reasons, (what, str(caught.value))


def test_an_openpgp_signature_with_bytes_appended_is_refused(pgp_signer, verifier):
    """The OpenPGP parser reads one packet and ignores what follows it, so without a check
    a signature field with bytes appended still verified: one signed message, many
    signature strings (the tamper matrix hit this when a signature's base64 ended in
    "=="). The same packet under the other (old-format) header still verifies."""
    signed = json.loads(env.canonical_json(pgp_signer.sign(envelope())))
    raw = base64.b64decode(signed["signature"])
    assert verifier.check(copy.deepcopy(signed))
    for junk in (b"\x00", b"A", b"\xc2\x00", raw):
        tampered = {**signed, "signature": base64.b64encode(raw + junk).decode()}
        with pytest.raises(SignatureError, match="bytes after"):
            verifier.check(tampered)
    assert raw[0] == 0xC2 and raw[1] < 192  # new format, one length octet
    old_format = bytes([0x89]) + (len(raw) - 2).to_bytes(2, "big") + raw[2:]
    assert verifier.check({**signed, "signature": base64.b64encode(old_format).decode()})


def _padding_bits_set(text: str) -> str:
    """``text`` (base64 ending in ``=`` padding) with the unused low bits of its last
    group set: another spelling of the same bytes."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    core = text.rstrip("\n")  # fedmsg's x509 lines end in one
    body = core.rstrip("=")
    unused = 4 if core.endswith("==") else 2
    last = alphabet[alphabet.index(body[-1]) | ((1 << unused) - 1)]
    return body[:-1] + last + text[len(body):]


@pytest.mark.parametrize("backend", ["x509", "openpgp"])
def test_a_signature_spelled_with_padding_bits_set_is_refused(backend, x509_signer,
                                                              pgp_signer, verifier):
    """Base64 leaves the low bits of a last group before ``=`` unused, and a lenient
    decoder ignores them: the same signature bytes under other strings. The tamper
    matrix met it (a changed signature "accepted" when its last group's letter only
    differed there); such a spelling is now malformed."""
    signer = x509_signer if backend == "x509" else pgp_signer
    for n in range(30):  # a signature whose length leaves padding (x509: every one)
        signed = json.loads(env.canonical_json(signer.sign(envelope(seq_id=n + 1))))
        if signed["signature"].rstrip("\n").endswith("="):
            break
    else:
        pytest.fail(f"no {backend} signature of 30 had base64 padding")
    respelled = _padding_bits_set(signed["signature"])
    assert respelled != signed["signature"]
    assert base64.b64decode(respelled.replace("\n", "")) == \
        base64.b64decode(signed["signature"].replace("\n", ""))
    assert verifier.check(copy.deepcopy(signed))
    with pytest.raises(SignatureError, match="not base64") as caught:
        verifier.check({**signed, "signature": respelled})
    assert caught.value.reason == "malformed"


def test_revoked_unknown_out_of_policy_stale_and_unsigned_are_refused(pki, verifier):
    now = int(time.time())
    cases = {
        "revoked": X509Signer(str(pki.revoked_cert), str(pki.revoked_key)).sign(envelope()),
        "unknown-signer": X509Signer(str(pki.stranger_cert),
                                     str(pki.stranger_key)).sign(envelope()),
        "policy": X509Signer(str(pki.rogue_cert), str(pki.rogue_key)).sign(envelope()),
        "underspecified": X509Signer(str(pki.cert), str(pki.key)).sign(
            envelope(topic="org.debian.dev.debbugs.bug.new")),
        "stale": X509Signer(str(pki.cert), str(pki.key)).sign(envelope(when=now - 7200)),
        "future": X509Signer(str(pki.cert), str(pki.key)).sign(envelope(when=now + 3600)),
        "unsigned": envelope(),
    }
    pgp_cases = {
        "revoked": OpenPGPSigner(str(pki.pgp_revoked_key)).sign(envelope()),
        "unknown-signer": OpenPGPSigner(str(pki.pgp_stranger_key)).sign(envelope()),
    }
    for reason, message in [*cases.items(), *pgp_cases.items()]:
        with pytest.raises(SignatureError) as caught:
            verifier.check(message)
        assert caught.value.reason == reason, (reason, str(caught.value))
    # replayed messages are old by nature: only their signature counts
    assert verifier.check(cases["stale"], replayed=True) == PUBLISHER_CN
    # a rogue allowed on git topics cannot sign dak's
    rogue = X509Signer(str(pki.rogue_cert), str(pki.rogue_key))
    assert verifier.check(rogue.sign(envelope(topic="org.debian.dev.git.push"))) == ROGUE_CN


def test_junk_signature_fields_are_refused_without_crashing(verifier, x509_signer, pgp_signer):
    signed = x509_signer.sign(envelope())
    pgp = pgp_signer.sign(envelope())
    junk = [
        {**signed, "signature": 5}, {**signed, "signature": ""},
        {**signed, "signature": "A" * (MAX_SIGNATURE_CHARS + 1)},
        {**signed, "signature": "!!not base64!!"}, {**signed, "certificate": ["x"]},
        {**signed, "certificate": base64.b64encode(b"-----BEGIN CERTIFICATE-----\nxx").decode()},
        {**signed, "crypto": "gpg"}, {**signed, "crypto": {"x": 1}},
        {**pgp, "signature": base64.b64encode(b"\x00garbage").decode()},
        {**pgp, "signature": signed["signature"]}, {**pgp, "certificate": "x"},
        {**signed, "timestamp": 1.5}, {**signed, "topic": 7},
    ]
    for item in junk:
        with pytest.raises(SignatureError):
            verifier.check(item)


# -- a real subscriber drops and counts ----------------------------------------------------

def test_subscriber_drops_and_counts_refused_messages_by_reason(pki, x509_signer, pgp_signer,
                                                                verifier):
    port = free_port()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    rejected: list[tuple[str, str]] = []
    endpoint = Endpoint("busgate", f"tcp://127.0.0.1:{port}", None)
    good = [x509_signer.sign(envelope(seq_id=1)), pgp_signer.sign(envelope(seq_id=2))]
    bad = [
        ("unsigned", envelope(seq_id=3)),
        ("bad-signature", {**x509_signer.sign(envelope(seq_id=4)), "seq_id": 900}),
        ("revoked", X509Signer(str(pki.revoked_cert), str(pki.revoked_key)).sign(
            envelope(seq_id=4))),
        ("policy", X509Signer(str(pki.rogue_cert), str(pki.rogue_key)).sign(
            envelope(seq_id=4))),
        ("unknown-signer", OpenPGPSigner(str(pki.pgp_stranger_key)).sign(envelope(seq_id=4))),
    ]
    last = x509_signer.sign(envelope(seq_id=3))
    try:
        with Subscriber([endpoint], verifier=verifier, context=ctx,
                        on_reject=lambda ep, e, exc: rejected.append((exc.reason,
                                                                      e.get("topic")))) as sub:
            probe = x509_signer.sign(envelope(seq_id=1, topic="org.debian.dev.dak.probe.sent"))
            got = []
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:  # wait until subscribed
                pub.send_multipart(env.encode(probe))
                got = list(sub.messages(count=1, timeout=0.1))
            assert got
            for item in [*good[1:], *(e for _, e in bad), last]:
                pub.send_multipart(env.encode(item))
            received = list(sub.messages(count=2, timeout=5))
    finally:
        pub.close(0)
        ctx.term()
    assert [m.seq_id for m in received] == [2, 3]  # the forged seq_id 900 moved nothing
    assert sub.stats.rejected == {reason: 1 for reason, _ in bad}
    assert [r for r, _ in rejected] == [r for r, _ in bad]
    assert sub.stats.unrepaired == 0


# -- routing policy, configuration, bounds ---------------------------------------------------

def test_policy_prefixes_match_whole_tokens_and_the_longest_wins(tmp_path):
    path = tmp_path / "p.toml"
    fpr = "8e1c 2b1a " + "0" * 32
    path.write_text('[routing]\n"org.d.prod.dak" = ["a"]\n"org.d.prod.dak.upload" = ["b"]\n'
                    f'"org.d.prod.git." = ["{fpr}"]\n')
    policy = routing.load(str(path))
    assert policy.decide("org.d.prod.dak.upload.accepted", "b").allowed
    assert not policy.decide("org.d.prod.dak.upload.accepted", "a").allowed
    assert policy.decide("org.d.prod.dak.removal", "a").allowed
    assert policy.decide("org.d.prod.dakota.x", "anyone").allowed  # not covered
    assert policy.decide("org.d.prod.git.push", "8E1C2B1A" + "0" * 32).allowed
    nitpicky = routing.load(str(path), nitpicky=True)
    assert nitpicky.decide("org.d.prod.dakota.x", "a").reason == "underspecified"


@pytest.mark.parametrize("text, message", [
    ("[routing]\nx = 1\n", "list of identities"),
    ("[other]\n", "unknown table"),
    ("not toml [", "not valid TOML"),
    ("[routing]\n" + "\n".join(f'"t{i}" = ["a"]' for i in range(routing.MAX_POLICY_ENTRIES + 1)),
     "more than"),
])
def test_bad_policy_files_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        routing.load(str(path))


def test_policy_file_size_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(routing, "MAX_POLICY_BYTES", 64)
    path = tmp_path / "p.toml"
    path.write_text("[routing]\n" + "#" * 100 + "\n")
    with pytest.raises(ConfigError, match="larger than 64"):
        routing.load(str(path))


def test_signing_settings_are_checked(make_settings, pki):
    ok = make_settings(signing={"backend": "x509", "cert": str(pki.cert), "key": str(pki.key),
                                "ca": str(pki.ca), "crl": str(pki.crl)})
    assert isinstance(make_signer(ok.signing), X509Signer)
    bad = [
        ({"backend": "ed25519"}, "signing.backend"),
        ({"backend": "x509", "key": str(pki.key)}, "signing.cert"),
        ({"backend": "openpgp"}, "signing.key"),
        ({"hash": "md5"}, "signing.hash"),
        ({"max_age": -1}, "signing.max_age"),
        ({"ca": str(pki.root / "missing.crt")}, "signing.ca"),
        ({"crl": str(pki.crl)}, "signing.crl"),
        ({"keyring": [str(pki.root / "none.gpg")]}, "signing.keyring"),
    ]
    for table, key in bad:
        with pytest.raises(ConfigError) as caught:
            make_settings(signing=table)
        assert caught.value.key == key, (table, str(caught.value))
    wrong_key = make_settings(signing={"backend": "x509", "cert": str(pki.cert),
                                       "key": str(pki.rogue_key)})
    with pytest.raises(ConfigError, match="is not the key of"):
        make_signer(wrong_key.signing)
    not_pgp = make_settings(signing={"backend": "openpgp", "key": str(pki.cert)})
    with pytest.raises(ConfigError, match="no usable OpenPGP"):
        make_signer(not_pgp.signing)


def test_a_new_crl_is_picked_up_without_restart(tmp_path, monkeypatch):
    from gateway import keygen, trust

    monkeypatch.setattr(trust, "RELOAD_CHECK_SECONDS", 0.0)
    ca, _, crl = keygen.make_ca(tmp_path / "ca", "CA")
    cert, key = keygen.make_cert(tmp_path / "pub", tmp_path / "ca", PUBLISHER_CN)
    verifier = Verifier(ca=str(ca), crl=str(crl))
    signed = X509Signer(str(cert), str(key)).sign(envelope())
    assert verifier.check(signed) == PUBLISHER_CN
    keygen.revoke(tmp_path / "ca", [str(cert)])
    with pytest.raises(SignatureError, match="revoked"):
        verifier.check(signed)


def test_a_batch_signed_on_threads_equals_one_by_one_signing(make_settings, pki):
    """Group commit signs a batch together (x509 on every core): the stored envelopes are
    the ones signing each in turn would give (PKCS#1 v1.5 is deterministic)."""
    from gateway import runtime
    from gateway.event import Event

    settings = make_settings(signing={"backend": "x509", "cert": str(pki.cert),
                                      "key": str(pki.key)})
    store = runtime.open_store(settings)
    events = [Event("dak", "upload", "accepted", key=f"b{i}", body={"n": i})
              for i in range(150)]
    now = int(time.time())
    with store.transaction() as tx:
        assert tx.add_events(events, now=now) == list(range(1, 151))
    stored = store.envelopes("seq_id > ?", [0], 1000)
    again = runtime.open_store(settings).factory
    again.epoch = store.epoch()
    expected = [again.make(e, seq, now)[2] for seq, e in enumerate(events, 1)]
    assert stored == expected
    check = Verifier(ca=str(pki.ca), crl=str(pki.crl))
    assert all(check.check(json.loads(s)) == PUBLISHER_CN for s in stored)


def test_a_late_backlog_in_sequence_passes_but_an_old_epoch_is_stale(x509_signer, verifier):
    """The age window guards first contact and epoch changes; a tracked publisher's next
    seq_ids pass however late (seq_id tracking already refuses old ones)."""
    port = free_port()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    old = int(time.time()) - 7200
    try:
        with Subscriber([Endpoint("busgate", f"tcp://127.0.0.1:{port}", None)],
                        verifier=verifier, context=ctx, on_reject=lambda *a: None) as sub:
            got = []
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                pub.send_multipart(env.encode(x509_signer.sign(envelope(seq_id=1))))
                got = list(sub.messages(count=1, timeout=0.1))
            late = x509_signer.sign(envelope(seq_id=2, when=old))
            other_epoch = x509_signer.sign(envelope(seq_id=3, when=old, publisher_epoch="f" * 32))
            replayed_old = x509_signer.sign(envelope(seq_id=1, when=old))
            for item in (replayed_old, other_epoch, late):
                pub.send_multipart(env.encode(item))
            received = list(sub.messages(count=1, timeout=5))
    finally:
        pub.close(0)
        ctx.term()
    assert [m.seq_id for m in received] == [2]
    assert sub.stats.rejected == {"stale": 2}


def test_expired_certificate_and_outdated_crl_are_refused(pki, x509_signer, verifier):
    signed = x509_signer.sign(envelope())
    later = time.time() + 40 * 86400  # the CRL (30 days) is past its next update
    with pytest.raises(SignatureError, match="crl-expired"):
        verifier.check(signed, replayed=True, now=later)
    with pytest.raises(SignatureError, match="expired: certificate"):
        verifier.check(signed, replayed=True, now=time.time() + 3 * 365 * 86400)


def test_trust_bounds_certificate_field_files_and_cache(pki, x509_signer, monkeypatch):
    from gateway import trust, verify

    signed = x509_signer.sign(envelope())
    with pytest.raises(SignatureError, match="certificate over"):
        Verifier(ca=str(pki.ca)).check(
            {**signed, "certificate": "A" * (verify.MAX_CERTIFICATE_CHARS + 1)})
    monkeypatch.setattr(trust, "CERT_CACHE", 1)
    checker = Verifier(ca=str(pki.ca), crl=str(pki.crl))
    rogue = X509Signer(str(pki.rogue_cert), str(pki.rogue_key)).sign(envelope())
    for item in (signed, rogue, signed):
        checker.check(item)
        assert len(checker.x509._leaves) == 1
    monkeypatch.setattr(trust, "MAX_CA_BYTES", 100)
    with pytest.raises(ConfigError, match="larger than 100 bytes"):
        Verifier(ca=str(pki.ca))
    monkeypatch.setattr(trust, "MAX_KEYRING_BYTES", 100)
    with pytest.raises(ConfigError, match="larger than 100 bytes"):
        Verifier(keyring=[str(pki.keyring)])
