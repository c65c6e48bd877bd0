"""Golden files for dak mail: each input -> its events, as their message types see them.

Inputs: every mail in ``fixtures/dak_mail`` and every dak sample in
``../shared/samples`` (the real announcement, the template mails filled as dak fills
them, the real ``.changes`` in an announcement, the real removals.822 log). Each gives
``fixtures/golden/dak_mail/<name>.expected.json``: per event its topic, key, msg_id,
type name, severity, summary, url, usernames, packages and body, or the parse error,
compared exactly. Every event must validate against its type, and the adapter's own
``Event.usernames``/``packages`` must equal the type's.

To accept a deliberate change of output::

    BUSGATE_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden_dak.py
    git diff fixtures/golden/dak_mail    # review: the diff is the change in behaviour
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from adapters.dak_mail import parse_removals_822
from adapters.dak_mail.messages import TYPES, BugClose, PackageAccept, UploadProcess
from adapters.mail import parse_mail
from gateway.errors import ParseError
from gateway.event import Event
from gateway.messages import INFO, WARNING, TypeIndex
from tests import golden
from tests.conftest import IN_CI
from tests.dak_mail_helpers import DAK_TOPICS, FIXTURES
from tests.messages_helpers import check_events, described
from tests.test_dak_mail_samples import SAMPLES, TEMPLATES, fill, filled, read

ADAPTER = "dak_mail"
INDEX = TypeIndex(TYPES)
#: dak's templates carry no Date (the MTA adds it): one is given so the msg_id year is fixed.
DATE = b"Date: Wed, 15 Mar 2023 12:00:00 +0000\n"


def _sample_cases() -> dict[str, Callable[[], list[Event]]]:
    if not SAMPLES.is_dir():
        return {}
    cases: dict[str, Callable[[], list[Event]]] = {
        "sample-hebcal-announce": lambda: parse_mail(
            (SAMPLES / "dak-accepted-announce-hebcal_4.31-1.eml").read_bytes()),
        "sample-removals-822": lambda: parse_removals_822(read("dak-removals.822-sample.txt")),
    }
    for name in sorted(TEMPLATES):
        cases["sample-" + name.removesuffix(".txt")] = (
            lambda n=name: parse_mail(DATE + filled(n)))
    for path in sorted(SAMPLES.glob("changes-*.changes")):
        cases["sample-announce-" + path.stem] = (
            lambda p=path: parse_mail(DATE + _announce(p.name)))
    return cases


def _announce(name: str) -> bytes:
    """A real .changes in dak's announcement template."""
    from debian import deb822

    text = read(name)
    paragraph = deb822.Changes(text)
    version = paragraph["Version"]
    return fill(read("dak-template-process-unchecked.announce.txt"),
                __SOURCE__=paragraph["Source"], __VERSION__=version,
                __ARCHITECTURE__=paragraph["Architecture"],
                __SUITE__=paragraph["Distribution"], __FILE_CONTENTS__=text,
                __CHANGES_FILENAME__=f"{paragraph['Source']}_{version.split(':', 1)[-1]}"
                                     "_i386.changes")


CASES: dict[str, Callable[[], list[Event]]] = {
    path.stem: (lambda p=path: parse_mail(p.read_bytes()))
    for path in sorted(FIXTURES.glob("*.eml"))
}
CASES.update(_sample_cases())


def outcome(produce: Callable[[], list[Event]]) -> dict:
    try:
        events = produce()
    except ParseError as exc:
        return {"error": str(exc)}
    messages = check_events(events, INDEX)
    for event, message in zip(events, messages, strict=True):
        assert list(event.usernames) == message.usernames, event.key
        assert list(event.packages) == message.packages, event.key
        assert event.time is not None, f"{event.key}: no time, so no stable msg_id"
    return {"events": [described(e, m) for e, m in zip(events, messages, strict=True)]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    golden.compare(ADAPTER, name, outcome(CASES[name]))


def test_no_stale_golden_files_and_samples_present() -> None:
    if not SAMPLES.is_dir() and IN_CI:
        pytest.fail(f"CI=true and {SAMPLES} is missing: the sample cases did not run")
    names = set(CASES)
    if not SAMPLES.is_dir():  # the sample goldens stay for a checkout that has them
        names |= {p.name.removesuffix(".expected.json")
                  for p in (golden.GOLDEN / ADAPTER).glob("sample-*.expected.json")}
    assert golden.stale(ADAPTER, names) == []


def test_every_dak_topic_has_a_type_and_a_golden_event() -> None:
    assert sorted(".".join(cls.topic_tokens) for cls in TYPES) == sorted(DAK_TOPICS)
    seen = set()
    for name in CASES:
        result = golden.path(ADAPTER, name)
        if result.is_file():
            seen |= {e["topic"].removeprefix("org.debian.dev.")
                     for e in json.loads(result.read_text()).get("events", [])}
    assert seen == set(DAK_TOPICS)


def test_the_summary_people_asked_for() -> None:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} is not here")
    (event,) = CASES["sample-hebcal-announce"]()
    (message,) = check_events([event], INDEX)
    assert message.summary == "hebcal 4.31-1 accepted into unstable (Barak A. Pearlmutter)"
    assert message.url == "https://tracker.debian.org/pkg/hebcal"
    assert (message.usernames, message.packages) == (["bap"], ["hebcal"])


def test_severity() -> None:
    assert PackageAccept.severity == INFO
    assert INDEX.lookup(("dak", "package", "reject")).severity == WARNING
    failure = UploadProcess({"status": "failure", "file": "x.changes"})
    assert failure.severity == WARNING and UploadProcess({"status": "success"}).severity == INFO


@pytest.mark.parametrize("cls", TYPES)
@pytest.mark.parametrize("body", [{}, [], "text", None, {"source": 5, "version": ["x"],
                                                         "suites": "unstable", "bug": "1",
                                                         "rows": [1, None], "packages": 3,
                                                         "commits": {}, "status": "failure"}])
def test_a_type_reads_any_body_without_failing(cls, body) -> None:  # type: ignore[no-untyped-def]
    """``busgate tail`` shows what any publisher sent: a bad body gives a plain line."""
    message = cls(body)
    assert isinstance(message.summary, str) and message.summary
    assert message.url is None
    assert message.usernames == [] and message.packages == []
    with pytest.raises(ParseError):
        message.validate()


def test_schema_refuses_what_the_adapter_never_sends() -> None:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} is not here")
    (event,) = CASES["sample-hebcal-announce"]()
    body = json.loads(json.dumps(event.body))
    for change in ({"source": "Hebcal"}, {"version": "v4"}, {"mail": "rm"},
                   {"architectures": ["AMD64"]}, {"closes": ["1"]}, {"extra": 1}):
        with pytest.raises(ParseError, match=r"busgate\.dak\.package\.accept\.v1"):
            PackageAccept({**body, **change}).validate()
    PackageAccept(body).validate()
    assert BugClose.validator() is BugClose.validator()

