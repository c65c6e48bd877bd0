"""dak mail parser over our own fixtures: every kind, the dedup keys, hostile input."""

from __future__ import annotations

import json
import time

import pytest

from adapters import mailparse
from adapters.dak_mail import parse_dak_mail
from adapters.mail import parse_mail
from gateway.errors import ParseError
from gateway.ingest import ingest
from gateway.runtime import open_store
from tests.dak_mail_helpers import (
    DAK_TOPICS,
    assert_subset,
    check_schema,
    expected,
    fixture,
    message_type,
    short_topic,
)

EXPECTED = expected()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_as_expected(name: str) -> None:
    want = EXPECTED[name]
    raw = fixture(name)
    if "error" in want:
        with pytest.raises(ParseError) as info:
            parse_mail(raw)
        assert want["error"] in str(info.value)
        return
    events = parse_mail(raw)
    assert len(events) == len(want["events"])
    for event, spec in zip(events, want["events"], strict=True):
        assert short_topic(event) == spec["topic"]
        if "key" in spec:
            assert event.key == spec["key"]
        assert_subset(event.body, spec.get("body", {}))
        check_schema(event)
    if "same_key_as" in want:
        assert [e.key for e in events] == [e.key for e in parse_mail(fixture(want["same_key_as"]))]


def test_every_dak_topic_has_a_fixture_and_a_type() -> None:
    seen = {spec["topic"] for want in EXPECTED.values() for spec in want.get("events", [])}
    assert seen == set(DAK_TOPICS)
    for topic in DAK_TOPICS:
        message_type(topic).validator()


def test_schema_rejects_a_wrong_body() -> None:
    event = parse_mail(fixture("announce-signed.eml"))[0]
    accept = message_type("dak.package.accept")
    broken = dict(event.body, closes=["1012345"])
    for body in (broken, {**event.body, "extra": 1}):
        with pytest.raises(ParseError, match=r"closes|extra"):
            accept(body).validate()


def test_announce_and_uploader_mail_are_one_event(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    store = open_store(settings)
    names = ["announce-signed.eml", "accepted-uploader.eml", "announce-base64-rfc2047.eml",
             "headers-only-accept.eml", "announce-signed.eml"]
    outcomes = [ingest(store, settings, "mail", fixture(n), n) for n in names]
    assert [o.added for o in outcomes] == [1, 0, 0, 0, 0]
    assert [o.duplicates for o in outcomes] == [0, 1, 1, 1, 1]
    rows = store.rows_after(0)
    assert len(rows) == 1
    envelope = json.loads(rows[0].envelope)
    assert envelope["topic"] == "org.debian.dev.dak.package.accept"
    assert envelope["msg"]["message_id"] == "<E1pc-announce-foo@fasolo.debian.org>"


def test_redelivered_single_witness_mails_are_stored_once(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    store = open_store(settings)
    for name in ("new.eml", "rejected-manual.eml", "prod.eml", "queue-success.eml",
                 "rm-bug1030001.eml", "rm-bug1030002.eml", "bug-close-latin1.eml"):
        assert ingest(store, settings, "mail", fixture(name), name).added == (
            0 if name == "rm-bug1030002.eml" else 1)
        assert ingest(store, settings, "mail", fixture(name), name).added == 0
    assert len(store.rows_after(0)) == 6


def test_second_rejection_of_same_file_is_a_new_event() -> None:
    first = parse_mail(fixture("rejected-automatic.eml"))[0]
    again = fixture("rejected-automatic.eml").replace(b"E1reject-automatic", b"E1reject-later")
    second = parse_mail(again)[0]
    assert first.key != second.key
    assert first.body["changes_file"] == second.body["changes_file"]


def test_unknown_and_broken_mail_go_to_quarantine(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    store = open_store(settings)
    kept = ingest(store, settings, "mail", fixture("dak-cruft-report.eml"), "cruft")
    broken = ingest(store, settings, "mail", fixture("mismatch-source.eml"), "mismatch")
    assert kept.quarantined == "unrecognized"
    assert broken.quarantined == "error" and "disagrees" in (broken.error or "")
    assert store.quarantine_counts() == {"error": 1, "unrecognized": 1}
    raws = {q["origin"]: bytes(q["raw"]) for q in store.quarantined()}
    assert raws["mismatch"] == fixture("mismatch-source.eml")


def test_fifty_mebibyte_mail_is_quarantined_as_oversize(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    store = open_store(settings)
    raw = fixture("announce-signed.eml") + b"x" * (50 * 1024 * 1024)
    outcome = ingest(store, settings, "mail", raw, "big")
    assert outcome.quarantined == "oversize"
    (kept,) = store.quarantined()  # bounded: the head and the size, not 50 MiB
    assert bytes(kept["raw"]) == raw[:settings.quarantine.oversize_keep_bytes]
    assert f"{len(raw)} bytes" in kept["error"]


def test_large_mail_under_the_limit_parses_quickly_and_is_capped() -> None:
    head, _, _ = fixture("new.eml").partition(b"\n\n")
    raw = head + b"\n\n" + b"W: many warnings\n" * 300_000 + (
        b"Your package has been put into the NEW queue.\n")
    started = time.perf_counter()
    event = parse_mail(raw)[0]
    assert time.perf_counter() - started < 10
    assert len(event.body["warnings"]) < 20_000
    assert event.body["warnings"].endswith("[... truncated]")


@pytest.mark.parametrize("junk", [
    b"", b"\x00" * 100, b"\xff\xfe\xfd" * 1000, b"Subject: \xff\xfe\n\n\x00",
    b"X-Debian: DAK\nSubject: Accepted\n\n", b"--\n--\n--",
    b"Content-Type: multipart/signed; boundary=x\nX-Debian: DAK\n\n--x\n",
])
def test_junk_never_crashes_the_router(junk: bytes) -> None:
    assert parse_mail(junk) == []


def test_truncated_changes_inside_a_dak_mail_is_an_error() -> None:
    raw = fixture("accepted-uploader.eml")
    with pytest.raises(ParseError):
        parse_mail(raw[: raw.index(b"Checksums-Sha256")])


@pytest.mark.parametrize(("old", "new", "message"), [
    (b"Closes: 1012345 1012346", b"Closes: 1012345 #abc", "Closes"),
    (b"Version: 1.2-1\n", b"Version: ;rm -rf\n", "version"),
    (b"Source: foo\n", b"Source: Foo Bar\n", "source"),
    (b"Architecture: source all", b"Architecture: source ../all", "architecture"),
])
def test_hostile_changes_fields_raise(old: bytes, new: bytes, message: str) -> None:
    raw = _plain_accepted().replace(old, new, 1)
    assert raw != _plain_accepted()
    with pytest.raises(ParseError) as info:
        parse_mail(raw)
    assert message.lower() in str(info.value).lower()


def _plain_accepted() -> bytes:
    """The uploader mail decoded to 8bit, so tests can edit its .changes bytes."""
    message = mailparse.parse(fixture("accepted-uploader.eml"))
    head = b"".join(f"{k}: {v}\n".encode() for k, v in message.raw_items()
                    if k.lower() not in ("content-transfer-encoding", "debian-version",
                                         "debian-architecture", "debian-source"))
    return head + b"Content-Transfer-Encoding: 8bit\n\n" + mailparse.text_body(message).encode()


def test_rfc2047_and_charset_fallbacks() -> None:
    assert mailparse.decode_rfc2047("=?iso-8859-1?q?J=F6rg?= M") == "Jörg M"
    assert mailparse.decode_rfc2047("=?x-unknown?q?J=F6rg?=") == "Jörg"
    assert mailparse.clean_header_value("a\r\n b\x00c\x1b[31m") == "a b c [31m"
    assert mailparse.decode_bytes("Jörg".encode("latin-1"), "utf-8") == "Jörg"
    assert mailparse.decode_bytes("Jörg".encode(), "latin-1") == "Jörg"
    assert mailparse.decode_bytes(b"\x81\x8d", "us-ascii") == "\x81\x8d"


def test_router_hands_the_same_message_type_to_adapters() -> None:
    message = mailparse.parse(fixture("announce-signed.eml"))
    assert message["Subject"] == "Accepted foo 1.2-1 (source all) into unstable"
    assert message.get_body(preferencelist=("plain",)) is not None
    assert parse_dak_mail(message, b"")[0].key == "dak:accept:foo_1.2-1_all+source:unstable"
