"""SOAP::Lite decoding (real captured samples, fixtures) and the zeep client over real HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import SHARED

from adapters.debbugs import soaplite, status
from adapters.debbugs.client import MAX_BATCH, DebbugsClient, DebbugsUnavailable
from fixtures.debbugs.soapserver import FakeDebbugs, parse_request

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "debbugs"
SAMPLES = SHARED / "samples"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.skipif(not SHARED.exists(), reason="no ../shared checkout")
def test_real_captured_get_status_decodes() -> None:
    value = soaplite.parse_response((SAMPLES / "debbugs-soap-responses-get-status1.xml")
                                    .read_bytes())
    assert sorted(value) == [881352, 881353]
    bug = value[881352]
    assert bug["originator"] == "Héllo Wörld <ümail@gnü.org>"  # base64Binary
    assert bug["found"] == {"udisks2/2.7.4-1": ""}  # nested apachens:Map
    assert bug["found_versions"] == ["udisks2/2.7.4-1"] and bug["fixed_versions"] == []
    assert bug["archived"] == 0 and bug["last_modified"] == 1510333025
    snap = status.snapshot(881353, value[881353])
    assert snap["title"].startswith("smb.conf: client max protocol")
    assert (snap["package"], snap["source"], snap["severity"]) == ("samba-common", "samba",
                                                                   "normal")
    assert snap["tags"] == [] and snap["done"] == "" and snap["archived"] is False


@pytest.mark.skipif(not SHARED.exists(), reason="no ../shared checkout")
def test_real_captured_newest_bugs_and_requests() -> None:
    newest = (SAMPLES / "debbugs-soap-responses-newest-bugs1.xml").read_bytes()
    assert soaplite.parse_response(newest) == [881351, 881352, 881353]
    # the captured guile-debbugs requests are what our fake server must understand
    assert parse_request((SAMPLES / "debbugs-soap-requests-get-status.xml").read_bytes()) \
        == ("get_status", "urn:Debbugs/SOAP", [[1, 2, 3]])
    assert parse_request((SAMPLES / "debbugs-soap-requests-get-bugs.xml").read_bytes())[2] \
        == [["package", "guix-patches", "package", "guix"]]
    assert parse_request((SAMPLES / "debbugs-soap-requests-newest-bugs.xml").read_bytes())[2] \
        == [2]


def test_fixture_shapes() -> None:
    assert soaplite.parse_response(fixture("newest-bugs-2001.xml")) == [66320, 66321]
    assert soaplite.parse_response(fixture("get-bugs.xml")) == [881352, 881353, 700000]
    assert soaplite.parse_response(fixture("get-bugs-empty.xml")) == []
    multi = soaplite.parse_response(fixture("get-status-multiref.xml"))[700000]
    assert multi["tags"] == ["patch", "upstream"] and multi["unused"] is None
    snap = status.snapshot(700000, multi)
    assert snap["title"] == "dpkg: <tags> & entities survive"
    assert snap["severity"] == "normal"  # empty severity means normal
    assert snap["mergedwith"] == [700001, 700002] and snap["affects"] == ["apt", "aptitude"]
    assert snap["archived"] is True and snap["found_versions"] == ["1.16.1", "dpkg/1.17.0"]
    b64 = soaplite.parse_response(fixture("get-status-base64.xml"))[881400]
    assert b64["subject"] == "emacs: été – 日本語 title"
    assert b64["owner"] == "Étienne <e@example.org>"
    [entry] = soaplite.parse_response(fixture("get-bug-log.xml"))
    assert entry["msg_num"] == 5 and "Severity: critical" in entry["body"]


def test_fault_is_reported_with_code_and_text() -> None:
    with pytest.raises(soaplite.SoapFault) as info:
        soaplite.parse_response(fixture("fault.xml"))
    assert info.value.code == "soap:Client" and "get_statuz" in info.value.string


@pytest.mark.parametrize(("name", "message"), [
    ("hostile-dtd.xml", "DTD"), ("hostile-badint.xml", "typed int"),
    ("hostile-nobody.xml", "no Body"),
])
def test_hostile_fixtures_are_refused(name: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(soaplite.SoapError, match=message):
        soaplite.parse_response(fixture(name))
    assert time.monotonic() - started < 1.0  # no entity expansion


@pytest.mark.parametrize("content", [
    b"", b"   ", b"<html>502 Bad Gateway</html>", b"\xff\xfe<not xml", b"<a><b></a>",
    b'<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/'
    b'envelope/"><soap:Body/></soap:Envelope>',
])
def test_garbage_is_a_soap_error(content: bytes) -> None:
    with pytest.raises(soaplite.SoapError):
        soaplite.parse_response(content)


def test_truncated_sample_never_decodes_partially() -> None:
    full = fixture("get-status-multiref.xml")
    for cut in range(0, len(full) - 1, 97):
        with pytest.raises(soaplite.SoapError):
            soaplite.parse_response(full[:cut])


def test_bad_base64_href_and_depth() -> None:
    head = (b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
            b'xmlns:xsi="http://www.w3.org/1999/XMLSchema-instance"><soap:Body><r>')
    tail = b"</r></soap:Body></soap:Envelope>"
    with pytest.raises(soaplite.SoapError, match="base64"):
        soaplite.parse_response(head + b'<v xsi:type="xsd:base64Binary">@@@</v>' + tail)
    with pytest.raises(soaplite.SoapError, match="external href"):
        soaplite.parse_response(head + b'<v href="http://evil/x"/>' + tail)
    with pytest.raises(soaplite.SoapError, match="points nowhere"):
        soaplite.parse_response(head + b'<v href="#nope"/>' + tail)
    with pytest.raises(soaplite.SoapError, match="another reference"):
        soaplite.parse_response(head + b'<v href="#a"/><w id="a" href="#a"/>' + tail)
    deep = b"<x>" * 200 + b"1" + b"</x>" * 200
    with pytest.raises(soaplite.SoapError, match="nested"):
        soaplite.parse_response(head + deep + tail)


# -- the client over real HTTP -------------------------------------------------------------
@pytest.fixture
def fake():
    server = FakeDebbugs().start()
    yield server
    server.stop()


def test_client_calls_and_batches(fake: FakeDebbugs) -> None:
    for bug in range(1, 1203):
        fake.put(bug, package="foo" if bug % 2 else "bar", subject=f"t{bug} ü")
    client = DebbugsClient(fake.url, timeout=5)
    assert client.newest_bugs(3) == [1200, 1201, 1202]
    assert client.get_bugs([("package", "foo")])[:3] == [1, 3, 5]
    found = client.get_status(range(1, 1300))
    assert len(found) == 1202 and found[7]["subject"] == "t7 ü"
    sizes = [n for m, n in fake.calls if m == "get_status"]
    assert sizes == [MAX_BATCH, MAX_BATCH, 299]  # <= 500 a call; 1203..1299 do not exist
    assert client.calls == 5


@pytest.mark.parametrize(("mode", "arg", "message"), [
    ("fault", "Internal error in Debbugs::Status", "SOAP fault soap:Server"),
    ("http500", None, "HTTP 500"),
    ("broken", None, "malformed XML"),
    ("truncated", None, "malformed XML"),
    ("drop", None, "cannot talk to"),
    ("slow", 3.0, "within the timeout"),
])
def test_client_failures_are_transient_and_clear(fake: FakeDebbugs, mode: str, arg: object,
                                                 message: str) -> None:
    fake.put(1)
    fake.failures["*"] = (mode, arg)
    client = DebbugsClient(fake.url, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(DebbugsUnavailable, match=message):
        client.get_status([1])
    assert time.monotonic() - started < 2.5


def test_client_retries_a_flaky_call_but_not_a_fault(fake: FakeDebbugs) -> None:
    fake.put(1)
    fake.failures["get_status"] = ("drop", None)
    fake.fail_after = 0
    client = DebbugsClient(fake.url, timeout=2, retries=1, retry_delay=0.01)
    with pytest.raises(DebbugsUnavailable):
        client.get_status([1])
    assert client.calls == 2  # tried twice
    fake.failures["get_status"] = ("fault", "boom")
    client.calls = 0
    with pytest.raises(DebbugsUnavailable, match="boom"):
        client.get_status([1])
    assert client.calls == 1


def test_client_refuses_oversized_and_unreachable(fake: FakeDebbugs) -> None:
    for bug in range(1, 50):
        fake.put(bug)
    with pytest.raises(DebbugsUnavailable, match="exceeds 2000 bytes"):
        DebbugsClient(fake.url, timeout=5, max_bytes=2000).get_status(range(1, 50))
    from conftest import free_port

    with pytest.raises(DebbugsUnavailable, match="cannot talk to"):
        DebbugsClient(f"http://127.0.0.1:{free_port()}/soap.cgi", timeout=1).newest_bugs(1)


def test_client_rejects_wrong_shapes(fake: FakeDebbugs) -> None:
    client = DebbugsClient(fake.url, timeout=5)
    fake.newest = []
    assert client.newest_bugs(5) == []
    assert client.get_status([1, 2]) == {}  # nothing exists: empty map


@pytest.mark.parametrize("mode", ["drip", "drip-body"])
def test_client_deadline_holds_against_a_dripping_server(fake: FakeDebbugs, mode: str) -> None:
    """requests' timeout is per read: a byte every 0.2 s would keep it alive for ever.
    The deadline covers status line, headers and body, and a timed-out call is not
    asked again inside the poll (that would double the wait)."""
    fake.put(1)
    fake.failures["*"] = (mode, 0.2)
    client = DebbugsClient(fake.url, timeout=1.0, retries=2, retry_delay=0.01)
    started = time.monotonic()
    with pytest.raises(DebbugsUnavailable, match=r"within the timeout \(1 s"):
        client.get_status([1])
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 2.5
    assert client.calls == 1


def test_client_refuses_an_oversized_answer_unread(fake: FakeDebbugs) -> None:
    """A Content-Length above the cap is refused before one body byte is read."""
    fake.put(1)
    fake.failures["*"] = ("huge", 10 * 2**30)  # announces 10 GiB, then drips
    client = DebbugsClient(fake.url, timeout=30, max_bytes=2**20)
    started = time.monotonic()
    with pytest.raises(DebbugsUnavailable, match=r"Content-Length 10737418240.*refused unread"):
        client.get_status([1])
    assert time.monotonic() - started < 5  # not the 30 s deadline, not the drip
