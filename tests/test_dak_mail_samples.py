"""Every real dak sample in ../shared/samples parses to the right event.

The real mail is parsed as is. dak's templates are filled the way
``daklib.utils.TemplateSubst`` does (plain substitution, ``X-DAK`` through the
``__BCC__``/``__CC__`` slot) with the real ``.changes`` samples as the quoted
file, and the real removals.822 log is read directly. A sample file this test
does not know makes it fail, so a new sample cannot be skipped silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapters.dak_mail import parse_removals_822
from adapters.dak_mail.removal import parse_removals_822 as removal_rows
from adapters.mail import parse_mail
from tests.conftest import IN_CI, SHARED
from tests.dak_mail_helpers import check_schema, short_topic

SAMPLES = SHARED / "samples"
pytestmark = pytest.mark.skipif(not SAMPLES.is_dir() and not IN_CI,
                                reason=f"{SAMPLES} is not here")

CHANGES = "changes-python-debian_0.1.23_source+all.changes"
CHANGES_FILE = "python-debian_0.1.23_amd64.changes"
#: Template sample -> the topic its filled mail must give.
TEMPLATES = {
    "dak-template-process-unchecked.accepted.txt": "dak.package.accept",
    "dak-template-process-unchecked.announce.txt": "dak.package.accept",
    "dak-template-process-unchecked.bug-close.txt": "dak.bug.close",
    "dak-template-process-unchecked.new.txt": "dak.package.new",
    "dak-template-queue.rejected.txt": "dak.package.reject",
    "dak-template-process-new.prod.txt": "dak.package.comment",
    "dak-template-rm.bug-close.txt": "dak.package.remove",
    "dak-template-process-accepted.install.legacy-2012.txt": "dak.package.accept",
}


def read(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


def test_every_dak_sample_is_covered() -> None:
    names = {p.name for p in SAMPLES.iterdir()
             if p.name.startswith(("dak-", "changes-"))}
    known = set(TEMPLATES) | {"dak-accepted-announce-hebcal_4.31-1.eml",
                              "dak-removals.822-sample.txt"}
    known |= {p for p in names if p.startswith("changes-")}
    assert names <= known, f"samples without a test: {sorted(names - known)}"
    assert set(TEMPLATES) <= names


def test_real_announcement_hebcal() -> None:
    raw = (SAMPLES / "dak-accepted-announce-hebcal_4.31-1.eml").read_bytes()
    (event,) = parse_mail(raw)
    assert short_topic(event) == "dak.package.accept"
    assert event.key == "dak:accept:hebcal_4.31-1_source:unstable"
    body = event.body
    assert (body["source"], body["version"], body["architectures"]) == (
        "hebcal", "4.31-1", ["source"])
    assert body["suite"] == "unstable" and body["distribution"] == "unstable"
    assert body["changed_by"] == "Barak A. Pearlmutter <bap@debian.org>"
    assert body["maintainer"] == "Shaya Potter <spotter@cs.columbia.edu>"
    assert body["urgency"] == "medium"
    assert body["changes"].startswith("hebcal (4.31-1) unstable; urgency=medium")
    assert [f["name"] for f in body["files"]] == [
        "hebcal_4.31-1.dsc", "hebcal_4.31.orig.tar.xz", "hebcal_4.31-1.debian.tar.xz",
        "hebcal_4.31-1_source.buildinfo"]
    assert body["files"][0]["sha256"].startswith("811db2256cc3")  # joined across a QP soft break
    assert body["files"][1]["size"] == 353044
    assert body["message_id"] == "<E1oS1p0-00BEVf-FV@fasolo.debian.org>"
    assert body["program"] == "dak process-upload"
    assert event.usernames == ("bap",)
    check_schema(event)


def fill(template: str, **values: str) -> bytes:
    """``TemplateSubst``: replace each ``__NAME__`` token by its value."""
    base = {
        "__DAK_ADDRESS__": "Debian FTP Masters <ftpmaster@ftp-master.debian.org>",
        "__REJECTOR_ADDRESS__": "Debian FTP Masters <ftpmaster@ftp-master.debian.org>",
        "__FROM_ADDRESS__": "Ann Ftp <ann@ftp-master.debian.org>",
        "__RM_ADDRESS__": "Debian FTP Masters <ftpmaster@ftp-master.debian.org>",
        "__MAINTAINER_TO__": "John Wright <jsw@debian.org>",
        "__MAINTAINER_FROM__": "jsw@debian.org",
        "__MAINTAINER__": "John Wright <jsw@debian.org>",
        "__ANNOUNCE_LIST_ADDRESS__": "debian-devel-changes@lists.debian.org",
        "__BCC__": "X-DAK: dak process-upload",
        "__CC__": "X-Filler: 42",
        "__SOURCE__": "python-debian",
        "__VERSION__": "0.1.23",
        "__ARCHITECTURE__": "source all",
        "__CHANGES_FILENAME__": CHANGES_FILE,
        "__SUITE__": "unstable",
        "__ACTION__": "accept",
        "__DISTRO__": "Debian",
        "__BUG_SERVER__": "bugs.debian.org",
        "__ADMIN_ADDRESS__": "ftpmaster@ftp-master.debian.org",
        "__WARNINGS__": "",
        "__FILE_CONTENTS__": read(CHANGES),
        "__BUG_NUMBER__": "634848",
        "__MANUAL_REJECT_MESSAGE__": "",
        "__REJECT_MESSAGE__": "",
        "__PROD_MESSAGE__": "Please explain debian/copyright.",
        "__SUMMARY__": "",
        "__WHOAMI__": "Scott Kitterman",
    }
    base.update(values)
    text = template
    for token, value in base.items():
        text = text.replace(token, value)
    left = re.findall(r"__[A-Z_]+__", text)
    assert not left, f"template tokens not filled: {left}"
    return text.encode()


def removal_summary() -> tuple[str, dict]:
    """The rm mail summary for the redmine-plugin-markdown stanza of the real removals.822."""
    stanza = next(r for r in removal_rows(read("dak-removals.822-sample.txt"))
                  if r["bugs"] == [753912])
    lines = [f"{r['package']:>10} | {r['version']:>10} | {', '.join(r['architectures'])}"
             for r in stanza["rows"]]
    summary = "\n".join(lines) + (
        "\n\n------------------- Reason -------------------\n"
        f"{stanza['reason']}\n----------------------------------------------\n")
    return summary, stanza


def filled(name: str) -> bytes:
    """The template sample ``name`` filled as dak would for the python-debian upload."""
    values: dict[str, str] = {}
    if name == "dak-template-queue.rejected.txt":
        values = {"__CC__": "X-DAK-Rejection: automatic",
                  "__REJECT_MESSAGE__": "python-debian_0.1.23.dsc: checksum mismatch"}
    elif name == "dak-template-process-new.prod.txt":
        values = {"__CC__": "X-DAK: dak process-new"}
    elif name == "dak-template-rm.bug-close.txt":
        summary, _ = removal_summary()
        values = {"__CC__": "X-DAK: dak rm", "__BCC__": "X-Filler: 42", "__BUG_NUMBER__": "753912",
                  "__SUBJECT__": "Removed package(s) from unstable",
                  "__SOURCES__": "redmine-plugin-markdown", "__SUITES__": "unstable",
                  "__SUITE_LIST__": "unstable", "__SUMMARY__": summary}
    elif name.endswith("legacy-2012.txt"):
        values = {"__SUMMARY__": f"{CHANGES_FILE}\n  to main/p/python-debian/{CHANGES_FILE}"}
    return fill(read(name), **values)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_filled_template(name: str) -> None:
    events = parse_mail(filled(name))
    assert [short_topic(e) for e in events] == [TEMPLATES[name]]
    event = events[0]
    check_schema(event)
    body = event.body
    if TEMPLATES[name] != "dak.package.remove":
        assert body["source"] == "python-debian"
        assert body["version"] == "0.1.23"
        assert body["changes_file"] == CHANGES_FILE
    if name.endswith(("accepted.txt", "announce.txt")):
        assert event.key == "dak:accept:python-debian_0.1.23_all+source:unstable"
        assert len(body["closes"]) == 10
        assert {f["name"] for f in body["files"]} >= {"python-debian_0.1.23.dsc"}
    if name.endswith("bug-close.txt") and "rm" not in name:
        assert body["bug"] == 634848 and body["done_by"] == "John Wright <jsw@debian.org>"
    if name == "dak-template-queue.rejected.txt":
        assert body["rejection"] == "automatic"
        assert body["reason"] == "python-debian_0.1.23.dsc: checksum mismatch"
    if name == "dak-template-process-new.prod.txt":
        assert body["comment"] == "Please explain debian/copyright."
    if name == "dak-template-rm.bug-close.txt":
        _, stanza = removal_summary()
        assert body["rows"] == stanza["rows"]
        assert body["bugs"] == [753912] and body["removed_by"] == "Scott Kitterman"
        assert body["reason"] == "ROM; obsolete"
        from_log = [e for e in parse_removals_822(read("dak-removals.822-sample.txt"))
                    if e.body["bugs"] == [753912]]
        assert [e.key for e in from_log] == [event.key]  # mail and log: one event


def test_filled_templates_for_one_upload_share_one_key() -> None:
    keys = {
        parse_mail(fill(read(name)))[0].key
        for name in ("dak-template-process-unchecked.accepted.txt",
                     "dak-template-process-unchecked.announce.txt")
    }
    assert len(keys) == 1


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("changes-*.changes"))
                         if SAMPLES.is_dir() else [])
def test_real_changes_files_in_announcement_and_uploader_mail(name: str) -> None:
    from debian import deb822

    text = read(name)
    paragraph = deb822.Changes(text)
    source, version = paragraph["Source"], paragraph["Version"]
    arch, dist = paragraph["Architecture"], paragraph["Distribution"]
    bare = version.split(":", 1)[-1]
    announce = fill(read("dak-template-process-unchecked.announce.txt"),
                    __SOURCE__=source, __VERSION__=version, __ARCHITECTURE__=arch,
                    __SUITE__=dist, __FILE_CONTENTS__=text,
                    __CHANGES_FILENAME__=f"{source}_{bare}_i386.changes")
    uploader = fill(read("dak-template-process-unchecked.accepted.txt"),
                    __SOURCE__=source, __VERSION__=version, __ARCHITECTURE__=arch,
                    __SUITE__=dist, __FILE_CONTENTS__=text,
                    __CHANGES_FILENAME__=f"{source}_{bare}_i386.changes")
    # the pre-2014 list form: no Debian-* headers, no "into <suite>"
    old = b"\n".join(line for line in announce.split(b"\n")
                     if not line.startswith(b"Debian")).replace(
        f" into {dist}".encode(), b"", 1)
    events = [parse_mail(raw)[0] for raw in (announce, uploader, old)]
    assert len({e.key for e in events}) == 1
    body = events[0].body
    assert body["source"] == source and body["version"] == version
    assert body["architectures"] == arch.split()
    assert body["closes"] == sorted(int(b) for b in paragraph["Closes"].split())
    assert {f["name"] for f in body["files"]} == {f["name"] for f in paragraph["Files"]}
    for event in events:
        check_schema(event)


def test_real_removals_822() -> None:
    text = read("dak-removals.822-sample.txt")
    events = parse_removals_822(text)
    assert len(events) == text.count("\nDate: ") + text.startswith("Date: ")
    assert len({e.key for e in events}) == len(events)
    for event in events:
        assert short_topic(event) == "dak.package.remove"
        check_schema(event)
    first = events[0].body
    assert first["rows"] == [{"package": "libzoom-ruby", "version": "0.4.1-5",
                              "architectures": ["all"]}]
    assert first["sources"] == [] and first["reason"] == "[auto-cruft] no longer built from source"
    yafaray = next(e.body for e in events if e.body["bugs"] == [756408])
    assert yafaray["sources"] == ["yafaray"]
    assert {r["version"] for r in yafaray["rows"]} == {"0.1.5-3", "0.1.5-3+b2"}
    mingw = events[-1].body
    assert mingw["also_bugs"] == [429313, 498529, 521758, 607215, 607218, 609869, 648306]
    assert events[0].time is not None


def test_sample_dir_exists_in_ci() -> None:
    assert Path(SAMPLES).is_dir()
