"""Golden files of the debbugs adapter: BTS mail and SOAP answers -> debbugs.bug.* events.

Inputs: every mail in ``fixtures/debbugs/mail`` (through the real mail router,
``adapters.mail.parse_mail``), and SOAP ``get_status`` answers served over real HTTP
by a local server to the real client, then translated as the poller translates them
(``status.snapshot``; the first answer about a bug gives ``new``, each later one the
``status.diff_events`` against the previous): the captured answer in
``../shared/samples``, the fixture envelopes, and ``fixtures/debbugs/soap-sequence``
(one bug filed, updated, closed, reopened, closed and archived; a second one reassigned,
merged and retitled). Each input's events -> ``fixtures/golden/debbugs/<name>.expected.json``
(topic, key, msg_id, body, summary, url, usernames, packages, severity, schema),
compared exactly; every event validates against its message type.

After a deliberate change: ``BUSGATE_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q
tests/test_golden_debbugs.py`` rewrites the files; review the diff.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SHARED
from golden import GOLDEN, compare_file
from messages_helpers import check_events, described

from adapters.debbugs import messages, status
from adapters.debbugs.client import DebbugsClient
from adapters.mail import parse_mail
from gateway.event import Event
from gateway.messages import DEBUG, INFO, MessageValidationError, TypeIndex, headers

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures" / "debbugs"
MAILS = sorted((FIXTURES / "mail").glob("*.eml"))
SEQUENCE = sorted((FIXTURES / "soap-sequence").glob("*.xml"), key=lambda p: int(p.stem))
LINK = "https://bugs.debian.org/{bug}"
INDEX = TypeIndex(messages.TYPES)
#: SOAP cases: name -> the get_status answers, served one after the other.
SOAP_CASES = {
    "soap-captured-get-status1": [SHARED / "samples" / "debbugs-soap-responses-get-status1.xml"],
    "soap-get-status-base64": [FIXTURES / "get-status-base64.xml"],
    "soap-get-status-multiref": [FIXTURES / "get-status-multiref.xml"],
    "soap-sequence": SEQUENCE,
}


class AnswerServer:
    """Answers every POST with ``answer`` (a captured SOAP envelope), over real HTTP."""

    def __init__(self) -> None:
        self.answer = b""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "text/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(owner.answer)))
                self.end_headers()
                self.wfile.write(owner.answer)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cgi-bin/soap.cgi"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[AnswerServer]:
    answers = AnswerServer()
    yield answers
    answers.close()


def soap_events(server: AnswerServer, answers: list[Path]) -> list[Event]:
    """The poller's translation of successive get_status answers."""
    client = DebbugsClient(server.url, timeout=5)
    snapshots: dict[int, dict] = {}
    events: list[Event] = []
    for answer in answers:
        server.answer = answer.read_bytes()
        statuses = client.get_status([1])  # the server answers the file, whatever is asked
        for bug in sorted(statuses):
            snap = status.snapshot(bug, statuses[bug])
            old = snapshots.get(bug)
            events += [status.new_event(snap, LINK)] if old is None else \
                status.diff_events(old, snap, LINK)
            snapshots[bug] = snap
    return events


def golden(name: str, events: list[Event]) -> None:
    assert events, f"{name}: no events"
    found = check_events(events, INDEX)
    compare_file(GOLDEN / "debbugs" / f"{name}.expected.json",
            [described(e, m) for e, m in zip(events, found, strict=True)])


@pytest.mark.parametrize("mail", MAILS, ids=[p.stem for p in MAILS])
def test_bts_mail_golden(mail: Path) -> None:
    golden(f"mail-{mail.stem}", parse_mail(mail.read_bytes()))


@pytest.mark.parametrize("name", sorted(SOAP_CASES))
def test_soap_answers_golden(server: AnswerServer, name: str) -> None:
    answers = SOAP_CASES[name]
    if not all(p.exists() for p in answers):
        pytest.skip(f"no ../shared checkout ({answers[0]})")
    golden(name, soap_events(server, answers))


def test_every_verb_is_covered_and_every_golden_file_has_its_input() -> None:
    expected = {p.name.removesuffix(".expected.json") for p in (GOLDEN / "debbugs").iterdir()}
    inputs = {f"mail-{p.stem}" for p in MAILS} | set(SOAP_CASES)
    assert expected == inputs
    topics = {t.verb for t in messages.TYPES}
    assert topics == {"new", "update", "close", "reopen", "archive", "report", "followup",
                      "forward", "submitter-change"}
    import json

    seen = set()
    for path in (GOLDEN / "debbugs").iterdir():
        seen |= {r["topic"].rsplit(".", 1)[1] for r in json.loads(path.read_text())}
    assert seen == topics


def test_summaries_people_read() -> None:
    """The lines ``busgate tail --terse`` and IRC show, one per kind."""
    [close] = parse_mail((FIXTURES / "mail" / "close-closed-by.eml").read_bytes())
    assert INDEX.lookup(close.topic_tokens())(close.body).summary == \
        '#881352 [udisks2] "udisks2: Breaks installation (with kernel panic)" closed by ' \
        'Jane Maintainer'
    [report] = parse_mail((FIXTURES / "mail" / "report.eml").read_bytes())
    message = INDEX.lookup(report.topic_tokens())(report.body)
    assert message.summary == '#1023456 [hebcal] "hebcal: wrong date for Purim in 2027" ' \
        'reported by Pat Reporter'
    assert message.packages == ["hebcal"] and message.usernames == []  # src: dropped
    update = messages.BugUpdate({"bug": 5, "package": "dpkg", "title": "t", "changes": {
        "severity": ["normal", "serious"], "tags": [["moreinfo"], ["patch"]],
        "owner": ["", "Jane <jane@debian.org>"], "mergedwith": [[], [6]],
        "forwarded": ["https://x/1", ""]}})
    assert update.summary == '#5 [dpkg] "t" updated: severity normal -> serious; tags +patch ' \
        '-moreinfo; owner Jane; merged with +#6; forwarded cleared'
    assert update.usernames == []  # the owner is named in changes only
    unarchived = messages.BugUpdate({"bug": 5, "changes": {"archived": [True, False]}})
    assert unarchived.summary == "#5 updated: not archived"


def test_envelope_headers_carry_the_types_users_and_packages() -> None:
    [followup] = parse_mail((FIXTURES / "mail" / "followup.eml").read_bytes())
    message = INDEX.lookup(followup.topic_tokens())(followup.body)
    assert headers(message, 1_793_000_000) == {
        "fedora_messaging_schema": "busgate.debbugs.bug.followup.v1",
        "fedora_messaging_severity": INFO, "sent-at": "2026-10-26T07:33:20+00:00",
        "fedora_messaging_user_bap": True, "busgate_package_hebcal": True}
    assert messages.BugArchive.severity == DEBUG and messages.BugClose.severity == INFO


def test_usernames_are_debian_logins_of_the_people_named() -> None:
    body = {"submitter": "Pat <pat@example.com>", "owner": "Jane <JANE@debian.org>",
            "done": "bap@debian.org (Barak)", "from": "x@lists.debian.org"}
    assert messages.BugClose(body).usernames == ["jane", "bap"]
    assert messages.people_logins(["a@debian.org, b@debian.org", None, 3]) == ["a", "b"]
    assert messages.bug_packages("src:hebcal,libhdate1 Bad_Name", "hebcal") == \
        ["hebcal", "libhdate1"]


@pytest.mark.parametrize("body", [None, "text", [], {}, {"bug": "x", "changes": 3},
                                  {"title": ["a"], "package": 5, "done": 7}])
def test_any_body_gets_a_summary_without_raising(body: object) -> None:
    for cls in messages.TYPES:
        message = cls(body)
        assert isinstance(message.summary, str)
        assert message.url is None
        assert isinstance(message.usernames, list) and isinstance(message.packages, list)


def test_types_refuse_what_the_adapters_never_send() -> None:
    [close] = parse_mail((FIXTURES / "mail" / "close-fixed-in.eml").read_bytes())
    messages.BugClose(dict(close.body)).validate()
    for wrong in ({**close.body, "type": "followup"}, {**close.body, "via": "soap"},
                  {**close.body, "from": "x" * 1001}, {**close.body, "bug": 0},
                  {k: v for k, v in close.body.items() if k != "done"},
                  {**close.body, "extra": 1}):
        with pytest.raises(MessageValidationError, match=r"busgate\.debbugs\.bug\.close\.v1"):
            messages.BugClose(wrong).validate()
    [followup] = parse_mail((FIXTURES / "mail" / "followup.eml").read_bytes())
    with pytest.raises(MessageValidationError):  # a followup's title is never null
        messages.BugFollowup({**followup.body, "title": None}).validate()
    new = status.new_event(status.snapshot(7, {"package": "p"}), LINK)
    messages.BugNew(dict(new.body)).validate()
    with pytest.raises(MessageValidationError):
        messages.BugNew({**new.body, "tags": ["a", "a"]}).validate()
    with pytest.raises(MessageValidationError):
        messages.BugUpdate({**new.body, "changes": {}}).validate()


def test_mail_field_cap_is_the_adapters() -> None:
    from adapters.debbugs import mail

    assert messages.MAX_MAIL_FIELD == mail.MAX_FIELD
