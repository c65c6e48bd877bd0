"""Issue 9 finding 4: only mail really signed by dak's key publishes dak events.

Real signatures made by gpg with throw-away keys (fixtures/dak_mail/signing.py),
checked by the real gpgv against a keyring file, through the mail router and
the real ingest/reprocess path. Forms: multipart/signed (what dak sends) and an
inline clear-signed body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.mail import parse_mail
from fixtures.dak_mail import generate, signing
from gateway import config, runtime
from gateway.errors import ParseError
from gateway.ingest import ingest, reprocess
from tests.dak_mail_helpers import check_schema, fixture

pytestmark = pytest.mark.skipif(not signing.available(), reason="gpg and gpgv are needed "
                                "(apt-get install gpg gpgv)")

HEAD = generate.headers(
    From=generate.FTP, To="Jörg Müller <jmuller@debian.org>", X_DAK="dak process-upload",
    **generate.dak_headers("foo", "1.2-1", "source all", "foo_1.2-1_amd64.changes",
                           "unstable", "accept"),
    Subject="foo_1.2-1_amd64.changes ACCEPTED into unstable",
    Message_Id="<E1pc-signed-foo@fasolo.debian.org>", Date=generate.DATE)
TEXT = "Thank you for your contribution to Debian.\n\nAccepted:\n\n" + generate.changes()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[signing.Keys]:
    made = signing.make_keys(tmp_path_factory.mktemp("gnupg"))
    yield made
    made.close()


@pytest.fixture(scope="module")
def keyring(keys: signing.Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ftp-master's keyring as an operator configures it: the dak key, and the expired and
    revoked keys (a keyring still holding a key that has since expired or been revoked)."""
    return keys.keyring(tmp_path_factory.mktemp("keyring") / "ftpmaster.gpg",
                        "dak", "expired", "revoked")


@pytest.fixture()
def settings(make_settings, keyring: Path):  # type: ignore[no-untyped-def]
    def factory(mode: str = "require", **dak: object) -> config.Settings:
        return make_settings(dak={"signatures": mode, "keyring": [str(keyring)], **dak})
    return factory


def signed_mail(keys: signing.Keys, name: str = "dak", text: str = TEXT) -> bytes:
    return signing.multipart_signed(keys, name, HEAD, text)


def status_of(raw: bytes, settings: config.Settings) -> str:
    [event] = parse_mail(raw, settings)
    check_schema(event)
    return str(event.body["signature"]["status"])


def test_good_signature_publishes_with_its_fingerprint(keys, settings) -> None:  # type: ignore[no-untyped-def]
    [event] = parse_mail(signed_mail(keys), settings())
    assert event.body["signature"] == {"status": "valid",
                                       "fingerprint": keys.fingerprints["dak"]}
    assert (event.body["source"], event.body["version"]) == ("foo", "1.2-1")
    check_schema(event)


@pytest.mark.parametrize(("case", "status"), [
    ("tampered", "bad"), ("stranger", "no-key"), ("unsigned", "missing"),
    ("fake-block", "bad"), ("expired", "expired"), ("revoked", "revoked"),
])
def test_require_rejects_and_mark_flags_every_bad_signature(  # type: ignore[no-untyped-def]
        keys, settings, case: str, status: str) -> None:
    if case == "tampered":  # the signed body changed after signing (urgency raised)
        raw = signed_mail(keys)
        assert raw.count(b"Urgency: medium") == 1
        raw = raw.replace(b"Urgency: medium", b"Urgency: high")
    elif case == "unsigned":
        raw = fixture("accepted-uploader.eml")
    elif case == "fake-block":  # multipart/signed with a made-up PGP block (round-one fixture)
        raw = fixture("announce-signed.eml")
    else:
        raw = signed_mail(keys, case)
    with pytest.raises(ParseError, match=f"without a good signature \\({status}"):
        parse_mail(raw, settings("require"))
    assert status_of(raw, settings("mark")) == status
    assert status_of(raw, settings("ignore")) == "unchecked"


def test_inline_clearsigned_body_only_the_signed_text_counts(keys, settings) -> None:  # type: ignore[no-untyped-def]
    raw = signing.inline_signed(keys, "dak", HEAD, TEXT)
    [event] = parse_mail(raw, settings())
    assert event.body["signature"]["status"] == "valid"
    assert event.body["closes"] == [1012345, 1012346]
    # Text added after the signature block is not signed: it never reaches an event.
    extra = raw + b"\nCloses: 999999\n"
    [event] = parse_mail(extra, settings())
    assert event.body["closes"] == [1012345, 1012346]
    # ...and the uploader's clear-signed .changes inside an unsigned dak mail proves nothing.
    quoted = signing.inline_signed(keys, "stranger", HEAD, TEXT)
    with pytest.raises(ParseError, match="no-key"):
        parse_mail(quoted, settings())


def test_forged_subject_on_a_genuine_signed_body_is_refused(keys, settings) -> None:  # type: ignore[no-untyped-def]
    """Headers are not signed: a good body re-sent as another upload's ACCEPTED mail."""
    prod = "Hi,\n\nplease fix the copyright file.\n\nThanks,\nftpmaster\n"
    raw = signed_mail(keys, text=prod)
    with pytest.raises(ParseError, match=r"carries no \.changes"):
        parse_mail(raw, settings())


def test_default_policy_runs_without_keyring_and_loses_nothing(keys, make_settings,  # type: ignore[no-untyped-def]
                                                              keyring) -> None:
    """The embedded default is "require": with no keyring a dak mail waits in quarantine
    (the daemon runs, the reason says what to configure) and is published by reprocess."""
    assert config.Settings().dak.signatures == "require"
    assert config.Settings().dak.keyring == []
    bare = make_settings(dak={"signatures": "require"})
    store = runtime.open_store(bare)
    outcome = ingest(store, bare, "mail", signed_mail(keys), "signed-1")
    assert outcome.quarantined == "error"
    assert "no keyring configured" in (outcome.error or "")
    assert store.rows_after(0) == []
    configured = make_settings(dak={"signatures": "require", "keyring": [str(keyring)]})
    [item] = store.quarantined()
    assert reprocess(store, item, settings=configured).added == 1
    [row] = store.rows_after(0)
    assert json.loads(row.envelope)["msg"]["signature"]["status"] == "valid"


def test_gpgv_is_bounded_in_time(keys, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    slow = tmp_path / "slow-gpgv"
    slow.write_text("#!/bin/sh\nsleep 30 &\nsleep 30\n")  # a child holding the pipes too
    slow.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(ParseError, match=r"error: gpgv took longer than 0\.5 s"):
        parse_mail(signed_mail(keys), settings(gpgv=str(slow), verify_timeout=0.5))
    assert time.monotonic() - started < 10
    missing = settings(gpgv=str(tmp_path / "no-such-gpgv"))
    with pytest.raises(ParseError, match="error: cannot run"):
        parse_mail(signed_mail(keys), missing)


def test_bad_signature_mode_is_a_config_error(make_settings) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(config.ConfigError, match=r"dak\.signatures"):
        make_settings(dak={"signatures": "sometimes"})
    with pytest.raises(config.ConfigError, match=r"dak\.keyring.*does not exist"):
        make_settings(dak={"signatures": "require", "keyring": ["/nonexistent/ring.gpg"]})


def test_real_dak_mail_signature_is_found_and_checked(settings) -> None:  # type: ignore[no-untyped-def]
    """The real 2022 hebcal announcement: gpgv reads its detached signature over part 1 and
    names ftp-master's key, which our test keyring does not hold."""
    from tests.conftest import SHARED

    sample = SHARED / "samples" / "dak-accepted-announce-hebcal_4.31-1.eml"
    if not sample.exists():
        pytest.skip(f"{sample} is not here")
    raw = sample.read_bytes()
    with pytest.raises(ParseError, match=r"no-key.*F38AA24EB85F09F9923CA4949BF6A82061CCB921"):
        parse_mail(raw, settings("require"))
    [event] = parse_mail(raw, settings("mark"))
    assert event.body["signature"] == {"status": "no-key", "fingerprint": None}
    assert event.body["source"] == "hebcal"


def test_busgate_mail_dry_run_applies_the_configured_policy(keys, settings) -> None:  # type: ignore[no-untyped-def]
    """The real command: its dry run says what the daemon would do with the mail."""
    import os
    import subprocess

    from tests.conftest import BUSGATE

    cfg = settings("require").loaded_from[0]
    env = {**os.environ, "BUSGATE_CONFIG": cfg}

    def dry_run(raw: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*BUSGATE, "mail", "--dry-run"], input=raw, env=env,
                              capture_output=True, timeout=60, check=False)

    good = dry_run(signed_mail(keys))
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout.splitlines()[0])["msg"]["signature"]["status"] == "valid"
    forged = dry_run(fixture("announce-signed.eml"))
    assert forged.returncode == 65
    assert b"without a good signature (bad" in forged.stderr


def test_boundary_look_alike_cannot_swap_the_signed_part(keys, settings) -> None:  # type: ignore[no-untyped-def]
    """A genuine signed part hidden behind a ``--boundaryX`` line, a forged part where
    the MIME parser sees part 1: what is verified is what is parsed, so it fails."""
    raw = signed_mail(keys)
    delimiter = f"\n--{signing.BOUNDARY}\n".encode()
    head, genuine, signature_part = raw.split(delimiter)
    forged = genuine.replace(b"Urgency: medium", b"Urgency: high")
    look_alike = f"\n--{signing.BOUNDARY}X\n".encode()
    swapped = head + look_alike + genuine + delimiter + forged + delimiter + signature_part
    with pytest.raises(ParseError, match=r"without a good signature \(bad"):
        parse_mail(swapped, settings())
    [event] = parse_mail(raw, settings())  # the untouched mail is fine
    assert event.body["urgency"] == "medium"
