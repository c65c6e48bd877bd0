"""BTS mail -> debbugs.bug.* events, through the real mail router and ingest."""

from __future__ import annotations

import json
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from messages_helpers import check_events

from adapters.debbugs.mail import is_bts_mail, parse_bts_mail
from adapters.debbugs.messages import TYPES
from adapters.mail import parse_mail
from gateway import runtime
from gateway.errors import ParseError
from gateway.event import Event
from gateway.ingest import ingest
from tests.conftest import REPO


def bts_mail(kind: str = "closed 881352", *, subject: str = "Bug#881352: udisks2: Breaks "
             "installation with kernel panic", msgid: str = "<close-1@example.org>",
             extra: str = "", body: str = "Fixed in 2.7.5-1.\n",
             loop: str = "owner@bugs.debian.org") -> bytes:
    headers = [
        "Received: (at 881352-done) by bugs.debian.org; 10 Nov 2017 17:00:00 +0000",
        "From: Jane Maintainer <jane@debian.org>",
        "To: 881352-done@bugs.debian.org",
        f"Subject: {subject}",
        f"Message-ID: {msgid}",
        "Date: Fri, 10 Nov 2017 17:00:00 +0000",
        "Resent-From: Jane Maintainer <jane@debian.org>",
        "Resent-To: debian-bugs-closed@lists.debian.org",
        f"X-Loop: {loop}",
        f"X-Debian-PR-Message: {kind}",
        "X-Debian-PR-Package: udisks2",
        "X-Debian-PR-Source: udisks2",
        "X-Debian-PR-Keywords: patch moreinfo",
        "Reply-To: 881352@bugs.debian.org",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    if extra:
        headers.append(extra)
    return ("\n".join(headers) + "\n\n" + body).encode()


def parse_message(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.parametrize(("kind", "verb"), [
    ("report 881352", "report"), ("followup 881352", "followup"), ("closed 881352", "close"),
    ("forwarded 881352", "forward"), ("they-closed 881352", "close"),
    ("submitter-changed 881352", "submitter-change"),
])
def test_every_message_type_becomes_its_event(kind: str, verb: str) -> None:
    [event] = parse_mail(bts_mail(kind))
    assert event.topic("org.debian.dev") == f"org.debian.dev.debbugs.bug.{verb}"
    body = event.body
    assert body["bug"] == 881352
    assert body["title"] == "udisks2: Breaks installation with kernel panic"
    assert (body["package"], body["source"]) == ("udisks2", "udisks2")
    assert body["tags"] == ["patch", "moreinfo"]
    assert body["from"] == "Jane Maintainer <jane@debian.org>"
    assert body["link"] == "https://bugs.debian.org/881352"
    assert body["via"] == "mail"
    assert event.packages == ("udisks2",)
    assert event.time == 1510333200.0


def test_copies_of_one_message_share_a_key_and_different_messages_do_not() -> None:
    to_list = parse_mail(bts_mail())[0]
    to_maintainer = parse_mail(bts_mail().replace(b"debian-bugs-closed@lists.debian.org",
                                                  b"udisks2@packages.debian.org"))[0]
    other = parse_mail(bts_mail(msgid="<close-2@example.org>"))[0]
    assert to_list.key == to_maintainer.key
    assert other.key != to_list.key


def test_routing_and_non_bug_bts_mail() -> None:
    assert is_bts_mail(parse_message(bts_mail()))
    gnu = parse_message(bts_mail(loop="help-debbugs@gnu.org"))
    assert is_bts_mail(gnu)  # X-Debian-PR-Message alone is enough
    plain = parse_message(b"From: a@b\nSubject: Accepted foo\nX-DAK: dak process-upload\n\nhi\n")
    assert not is_bts_mail(plain)
    for kind in ("transcript", "doc-text", "error 12"):
        assert parse_bts_mail(parse_message(bts_mail(kind)), b"") == []


def test_link_comes_from_configured_host_never_from_x_loop(make_settings) -> None:
    """Issue 9 finding 4: X-Loop is any sender's to write; the link is debbugs.link."""
    forged = bts_mail(loop="owner@bugs.evil.example")
    [event] = parse_mail(forged)
    assert event.body["link"] == "https://bugs.debian.org/881352"
    settings = make_settings(debbugs={"link": "https://bugs.example.net/cgi/bugreport?bug={bug}"})
    [event] = parse_mail(forged, settings)
    assert event.body["link"] == "https://bugs.example.net/cgi/bugreport?bug=881352"
    assert "evil" not in json.dumps(event.body)


def test_encoded_and_hostile_headers() -> None:
    raw = bts_mail(subject="=?utf-8?q?Bug=23881352=3A_d=C3=A9j=C3=A0_vu?=",
                   extra="X-Evil: a\r\n\tb")
    [event] = parse_mail(raw)
    assert event.body["title"] == "déjà vu"
    # an unknown charset and an injected control character never crash, never leak
    raw = bts_mail(subject="=?x-unknown?q?Bug=23881352=3A_caf=E9?=\x07 x")
    [event] = parse_mail(raw)
    assert "\x07" not in event.body["title"] and event.body["bug"] == 881352
    # a subject about another bug is kept whole rather than mis-split
    [event] = parse_mail(bts_mail(subject="Bug#1: something else"))
    assert event.body["title"] == "Bug#1: something else"


@pytest.mark.parametrize("value", ["closed 0", "closed 12x", "; rm -rf 1",
                                   "closed 1234567890123", "closed 1 2"])
def test_malformed_pr_message_is_a_clear_parse_error(value: str) -> None:
    with pytest.raises(ParseError, match="X-Debian-PR-Message"):
        parse_mail(bts_mail(value))


def test_pr_message_without_a_bug_number_is_no_bug_event() -> None:
    assert parse_mail(bts_mail("closed")) == []


def test_truncated_mail_still_parses_headers_or_is_unrecognized() -> None:
    raw = bts_mail()
    assert parse_mail(raw[: raw.index(b"\n\n")])[0].event == "close"  # no body at all
    assert parse_mail(raw[:200]) == []  # cut before X-Debian-PR-Message: not a bug event


def test_ingest_commits_once_and_quarantines_bad_mail(make_settings) -> None:
    settings = make_settings()
    store = runtime.open_store(settings)
    assert ingest(store, settings, "mail", bts_mail(), "t1").added == 1
    assert ingest(store, settings, "mail", bts_mail(), "t2").duplicates == 1  # list copy
    [row] = store.rows_after(0)
    assert row.topic == "org.debian.dev.debbugs.bug.close"
    assert json.loads(row.envelope)["msg"]["bug"] == 881352
    bad = ingest(store, settings, "mail", bts_mail("closed 12x"), "t3")
    assert bad.quarantined == "error" and "X-Debian-PR-Message" in (bad.error or "")
    big = bts_mail(body="x" * (settings.mail.max_size + 1))
    assert ingest(store, settings, "mail", big, "t4").quarantined == "oversize"
    assert [q["reason"] for q in store.quarantined()] == ["error", "oversize"]


# -- Issue 10 items 4 and 5: every closing form, one meaning per topic, both name forms --

CLOSE_MAILS = REPO / "fixtures" / "debbugs" / "mail"
TITLE = "udisks2: Breaks installation (with kernel panic)"
JANE = "Jane Maintainer <jane@debian.org>"


def close_fixture(name: str) -> bytes:
    return (CLOSE_MAILS / name).read_bytes()


def check_debbugs_schema(event: Event) -> None:
    """The event validates against its message type (``adapters.debbugs.messages``)."""
    check_events([event], TYPES)


@pytest.mark.parametrize(("name", "title"), [
    ("close-marked-as-done.eml", TITLE),
    ("close-marked-as-done-no-bts-headers.eml", TITLE),
    ("close-closed-by.eml", TITLE),
    ("close-closed-by-no-bts-headers.eml", TITLE),
    ("close-fixed-in.eml", None),
])
def test_every_closing_form_is_a_close_with_the_bug_title_and_the_closer(
        name: str, title: str | None) -> None:
    [event] = parse_mail(close_fixture(name))
    assert (event.service, event.object, event.event) == ("debbugs", "bug", "close")
    assert event.body["bug"] == 881352
    assert event.body["title"] == title  # never "marked as done (...)" or "fixed in ..."
    assert event.body["done"] == JANE and event.body["from"] == JANE  # never the tracker
    assert "owner@bugs" not in json.dumps(event.body)
    check_debbugs_schema(event)


def test_one_closure_is_one_event_whichever_of_its_mails_comes_first(make_settings) -> None:
    settings = make_settings()
    store = runtime.open_store(settings)
    names = ["close-marked-as-done.eml", "close-closed-by.eml",
             "close-marked-as-done-no-bts-headers.eml", "close-fixed-in.eml"]
    added = [ingest(store, settings, "mail", close_fixture(n), n).added for n in names]
    assert added == [1, 0, 0, 0]
    [row] = store.rows_after(0)
    assert json.loads(row.envelope)["msg"]["title"] == TITLE


def test_mail_and_soap_close_events_mean_the_same() -> None:
    """One topic, one meaning: title = the bug's title, done = the closer."""
    from adapters.debbugs import status as st

    old = st.snapshot(881352, {"package": "udisks2", "subject": TITLE, "done": ""})
    # debbugs stores the closer as the mail wrote it, here in the old form
    new = st.snapshot(881352, {"package": "udisks2", "subject": TITLE,
                               "done": "jane@debian.org (Jane Maintainer)",
                               "originator": "sam@example.org (Sam Submitter)"})
    [soap] = st.diff_events(old, new, "https://bugs.debian.org/{bug}")
    assert soap.body["submitter"] == "Sam Submitter <sam@example.org>"
    for name in ("close-marked-as-done.eml", "close-closed-by.eml"):
        [mail] = parse_mail(close_fixture(name))
        assert soap.event == mail.event == "close"
        for field in ("bug", "title", "done", "link", "package"):
            assert soap.body[field] == mail.body[field], (name, field)
    check_debbugs_schema(soap)


@pytest.mark.parametrize("sender", ["jane@debian.org (Jane Maintainer)",
                                    "Jane Maintainer <jane@debian.org>",
                                    '"Jane Maintainer" <jane@debian.org>',
                                    "=?utf-8?q?Jane_Maintainer?= <jane@debian.org>"])
def test_sender_names_kept_in_both_address_forms(sender: str) -> None:
    raw = close_fixture("followup-old-name-form.eml").replace(
        b"From: jane@debian.org (Jane Maintainer)", f"From: {sender}".encode())
    [event] = parse_mail(raw)
    assert event.event == "followup"
    assert event.body["from"] == JANE


def test_names_with_separators_are_quoted_and_bare_addresses_stay_bare() -> None:
    raw = close_fixture("followup-old-name-form.eml")
    [event] = parse_mail(raw.replace(b"(Jane Maintainer)", b"(Maintainer, Jane)"))
    assert event.body["from"] == '"Maintainer, Jane" <jane@debian.org>'
    [event] = parse_mail(raw.replace(b" (Jane Maintainer)\n", b"\n", 1))
    assert event.body["from"] == "jane@debian.org"


def test_a_stranger_using_the_closing_subject_is_not_the_tracker() -> None:
    raw = close_fixture("close-marked-as-done-no-bts-headers.eml").replace(
        b"From: owner@bugs.debian.org (Debian Bug Tracking System)", b"From: Eve <eve@x.test>")
    assert parse_mail(raw) == []
