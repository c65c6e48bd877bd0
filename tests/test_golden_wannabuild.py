"""Golden files of the wanna-build adapter: transactions rows -> wanna-build.build.<state>.

Inputs: ``fixtures/wannabuild/rows/<name>.json``, each a list of ``transactions``
rows joined with their ``packages`` row (the fields of ``translate.Row``; ``time`` as
stored, naive, taken as UTC for ``epoch``; a text value ``{"hex": ...}`` stands for
raw bytes from an SQL_ASCII database). Each row goes through ``translate.to_event``,
what the poller does with a row it read (the SQL side is tested against the real
PostgreSQL in test_wannabuild_pg.py). The events -> ``fixtures/golden/wannabuild/
<name>.expected.json`` (topic, key, msg_id, body, summary, url, usernames, packages,
severity, schema), compared exactly; every event validates against its message type.

After a deliberate change: ``BUSGATE_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q
tests/test_golden_wannabuild.py`` rewrites the files; review the diff.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from golden import GOLDEN, compare_file
from messages_helpers import check_events, described

from adapters.wannabuild import messages, translate
from adapters.wannabuild.translate import Row, to_event
from gateway.event import Event
from gateway.messages import INFO, WARNING, MessageValidationError, TypeIndex

REPO = Path(__file__).resolve().parent.parent
ROWS = sorted((REPO / "fixtures" / "wannabuild" / "rows").glob("*.json"))
INDEX = TypeIndex(messages.TYPES)


def load_rows(path: Path) -> list[Row]:
    rows = []
    for record in json.loads(path.read_text(encoding="utf-8")):
        fields: dict[str, Any] = {k: bytes.fromhex(v["hex"]) if isinstance(v, dict) else v
                                  for k, v in record.items()}
        when = dt.datetime.fromisoformat(fields["time"])
        fields["time"] = when
        fields.setdefault("epoch", when.replace(tzinfo=dt.UTC).timestamp())
        fields.setdefault("time_text", record["time"])
        rows.append(Row(**fields))
    return rows


def events_of(path: Path) -> list[Event]:
    return [to_event(row, max_failure_chars=4000) for row in load_rows(path)]


@pytest.mark.parametrize("path", ROWS, ids=[p.stem for p in ROWS])
def test_rows_golden(path: Path) -> None:
    events = events_of(path)
    assert events
    found = check_events(events, INDEX)
    compare_file(GOLDEN / "wannabuild" / f"{path.stem}.expected.json",
            [described(e, m) for e, m in zip(events, found, strict=True)])


def test_every_golden_file_has_its_input() -> None:
    expected = {p.name.removesuffix(".expected.json")
                for p in (GOLDEN / "wannabuild").iterdir()}
    assert expected == {p.stem for p in ROWS}


def test_summaries_links_and_severities() -> None:
    by_state = {e.body["state"]: INDEX.lookup(e.topic_tokens())(e.body)
                for path in ROWS for e in events_of(path)}
    built = by_state["Built"]
    assert built.summary == "hebcal 4.31-1 built on amd64 (sid)"
    assert built.url == "https://buildd.debian.org/status/package.php?p=hebcal&suite=sid"
    assert built.usernames == ["buildd_amd64-x86-03"] and built.packages == ["hebcal"]
    assert by_state["Needs-Build"].summary == \
        "hebcal 4.30-2+b2 needs a build on arm64 (trixie-proposed-updates)"
    failed = by_state["Failed"]
    assert failed.summary == "dvd+rw-tools 7.1-14 failed to build on amd64 (sid)"
    assert failed.url == \
        "https://buildd.debian.org/status/package.php?p=dvd%2Brw-tools&suite=sid"
    assert failed.severity == by_state["Build-Attempted"].severity == WARNING
    assert by_state["Dep-Wait"].summary == "libhdate 1.6.02-3 waiting for build-dependencies " \
        "on mips64el (sid): python3-all-dev (>= 3.13)"
    assert by_state["Install-Wait"].summary == "hello 2.10-5 is Install-Wait on amd64 (sid)"
    assert {s for s, m in by_state.items() if m.severity == WARNING} == \
        {"Failed", "Build-Attempted"}
    assert messages.BuildStateChange.severity == INFO  # the class default stays an int
    every = {m.state_slug for m in by_state.values()}
    assert set(messages.PHRASES) - every <= {"dep-wait-removed", "not-for-us"}


def test_one_type_claims_every_state_token() -> None:
    for token in ("built", "failed", "unknown", "install-wait", "n-code-x"):
        assert INDEX.lookup(("wanna-build", "build", token)) is messages.BuildStateChange
    assert INDEX.lookup(("wanna-build", "build")) is not messages.BuildStateChange


def test_link_pattern_and_nulls() -> None:
    assert translate.build_link("https://b/{package}/{distribution}", "a b/c", "sid") == \
        "https://b/a%20b%2Fc/sid"
    assert translate.build_link(translate.DEFAULT_LINK, None, "sid") is None
    [row] = load_rows(ROWS[0])[:1]
    ports = to_event(row, link="https://buildd.debian-ports.org/status/package.php?"
                               "p={package}&suite={distribution}")
    assert INDEX.lookup(ports.topic_tokens())(ports.body).url.startswith(
        "https://buildd.debian-ports.org/")


def test_the_poller_links_with_wannabuild_link_from_its_settings() -> None:
    from adapters.wannabuild.poller import WannaBuildPoller
    from adapters.wannabuild.settings import WannaBuildSettings

    rows = load_rows(ROWS[0])[:2]
    ports = WannaBuildPoller(WannaBuildSettings(
        dsn="dbname=unused", link="https://ports.example/{package}?s={distribution}"))
    events, bad = ports._translate(rows)
    assert not bad and all(e.body["link"].startswith("https://ports.example/") for e in events)
    none = WannaBuildPoller(WannaBuildSettings(dsn="dbname=unused", link=""))
    assert all(e.body["link"] is None for e in none._translate(rows)[0])


@pytest.mark.parametrize("body", [None, 3, {}, {"state": 5, "package": ["x"], "version": {}}])
def test_any_body_gets_a_summary_without_raising(body: object) -> None:
    message = messages.BuildStateChange(body)
    assert isinstance(message.summary, str) and message.url is None
    assert message.usernames == [] and message.packages == []


def test_the_type_refuses_what_the_adapter_never_sends() -> None:
    body = dict(events_of(ROWS[0])[0].body)
    messages.BuildStateChange(body).validate()
    for wrong in ({**body, "extra": 1}, {**body, "package_row": "maybe"},
                  {**body, "binary_nmu_version": "1"}, {**body, "notes": "n" * 1001},
                  {**body, "truncated": ["time"]}, {**body, "truncated": ["notes", "notes"]},
                  {k: v for k, v in body.items() if k != "link"}):
        with pytest.raises(MessageValidationError):
            messages.BuildStateChange(wrong).validate()
    assert messages.MAX_FIELD_CHARS == translate.MAX_FIELD_CHARS


def test_a_changed_event_fails_the_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUSGATE_REGEN_GOLDEN", raising=False)
    path = ROWS[0]
    events = events_of(path)
    records = [described(e, m) for e, m in zip(events, check_events(events, INDEX),
                                                 strict=True)]
    golden = GOLDEN / "wannabuild" / f"{path.stem}.expected.json"
    compare_file(golden, records)
    records[-1] = {**records[-1], "summary": records[-1]["summary"] + "!"}
    with pytest.raises(AssertionError, match="differs"):
        compare_file(golden, records)
    with pytest.raises(pytest.fail.Exception, match="BUSGATE_REGEN_GOLDEN=1"):
        compare_file(golden.with_name("absent.expected.json"), records)
