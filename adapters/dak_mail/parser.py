"""Turn one classified dak mail into ``dak.*`` events.

Event keys say *what happened*, not which mail said it, so the list
announcement, the uploader's ACCEPTED mail and any redelivery of either share
one key (and one msg_id): ``dak:accept:<source>_<version>_<archs>:<suite>``.
Mails that are the only witness of their event (NEW, REJECTED, prod, queue
reports) are keyed by the changes file plus a digest of the Message-Id, so a
redelivered copy is stored once while a second rejection of a re-upload with
the same file name is a new event.

Values from the subject, the ``Debian-*`` headers and the quoted ``.changes``
must agree; a mail whose parts contradict each other raises
:class:`ParseError` (it is quarantined for a human) instead of publishing a
guess.
"""

from __future__ import annotations

import hashlib
import re
from email.message import Message
from email.utils import getaddresses
from typing import Any

from adapters import mailparse
from adapters.dak_mail import changes as ch
from adapters.dak_mail import removal
from adapters.dak_mail.classify import Classified, single
from adapters.dak_mail.messages import debian_logins
from adapters.dak_mail.signature import Verdict
from gateway.errors import ParseError
from gateway.event import Event

#: ``<source>_<version without epoch>_<arch tag>.changes``
CHANGES_FILE = re.compile(r"(?P<source>[a-z0-9][a-z0-9+.-]+)_(?P<version>[0-9A-Za-z.+~-]+)"
                          r"_(?P<tag>[a-z0-9][a-z0-9+-]*)\.changes\Z")
SUITE_ITEM = re.compile(r"(?P<suite>[a-z0-9][a-z0-9.+-]*)(?:->(?P<queue>[a-z0-9][a-z0-9.+-]*))?\Z")
#: Longest free text (reject reason, prod comment, queue report) copied into an event.
MAX_TEXT = 16 * 1024
_NEW_BLURB = "Your package has been put into the NEW queue"
_REJECT_FOOTER = re.compile(r"^===\s*$", re.M)


class Mail:
    """The parts of one mail every builder needs, decoded once."""

    def __init__(self, message: Message, raw: bytes, classified: Classified,
                 verdict: Verdict | None = None):
        self.message = message
        self.raw = raw
        self.kind = classified.kind
        self.subject_fields = classified.fields
        self.action = classified.action
        self.verdict = verdict or Verdict("unchecked")
        #: Only the signed text when the signature is good: nothing added around it counts.
        signed = self.verdict.signed_text
        self.body = signed if signed is not None else mailparse.text_body(message)
        #: Headers are not signed: a signed accept or bug-close must quote its .changes, so
        #: a genuine signed body cannot be re-sent under a forged subject for another upload.
        self.signed = signed is not None
        self.message_id = mailparse.message_id(message)
        self.program = single(message, "X-DAK")
        self.time = mailparse.date_to_epoch(single(message, "Date"))
        self.sender = single(message, "From")

    def header(self, name: str) -> str | None:
        return single(self.message, name)

    def fingerprint(self) -> str:
        """What tells this mail apart from another one for the same file (redelivery = same)."""
        basis = self.message_id or "\n".join(
            (self.header("Date") or "", self.header("Subject") or "", self.body))
        return hashlib.sha256(basis.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def build_events(mail: Mail) -> list[Event]:
    builder = _BUILDERS[mail.kind]
    return builder(mail)


# -- uploads -----------------------------------------------------------------------------


def _upload(mail: Mail, *, need_changes: bool) -> dict[str, Any]:
    """Upload fields merged from subject, ``Debian-*`` headers and the quoted .changes."""
    text = ch.find_changes(mail.body) if mail.body else None
    parsed = ch.parse_changes(text) if text else None
    if need_changes and parsed is None:
        raise ParseError(f"{mail.kind} mail carries no .changes in its body")
    up: dict[str, Any] = {
        "source": None, "version": None, "architectures": [], "distribution": None,
        "urgency": None, "maintainer": None, "changed_by": None, "date": None,
        "closes": [], "changes": None, "files": [], "binaries": [],
    }
    if parsed:
        up.update({k: v for k, v in parsed.items() if k != "format"})
    sf = mail.subject_fields
    changes_file = _agree("changes file name", sf.get("file"), mail.header("Debian-Changes"))
    if changes_file is not None and not ch.SAFE_FILE.match(changes_file):
        raise ParseError(f"not a .changes file name: {changes_file[:80]!r}")
    # Source and version: every witness must agree with the .changes.
    up["source"] = _agree("source", up["source"], sf.get("source"), mail.header("Debian-Source"))
    up["version"] = _agree("version", up["version"], sf.get("version"),
                           mail.header("Debian-Version"))
    arch_text = _agree_archs(up["architectures"], sf.get("arch"),
                             mail.header("Debian-Architecture"))
    if arch_text is not None:
        up["architectures"] = ch.split_architectures(arch_text)
    if changes_file is not None:
        _check_file_name(changes_file, up)
    if up["source"] is None:
        raise ParseError("cannot tell which upload this mail is about: no .changes file name, "
                         "no Debian-Source header, no quoted .changes")
    ch.split_source(up["source"])
    if up["version"] is not None:
        ch.check_version(up["version"])
    up["changes_file"] = changes_file
    up["sourceful"] = "source" in up["architectures"]
    return up


def _agree(what: str, *values: str | None) -> str | None:
    present = {v.strip() for v in values if v is not None and v.strip()}
    if len(present) > 1:
        raise ParseError(f"mail disagrees with itself about the {what}: "
                         + " vs ".join(sorted(repr(v[:60]) for v in present)))
    return present.pop() if present else None


def _agree_archs(parsed: list[str], *texts: str | None) -> str | None:
    sets = {frozenset(parsed)} if parsed else set()
    chosen = " ".join(parsed) if parsed else None
    for text in texts:
        if text is not None and text.strip():
            sets.add(frozenset(text.split()))
            chosen = chosen or text
    if len(sets) > 1:
        raise ParseError("mail disagrees with itself about the architectures")
    return chosen


def _check_file_name(name: str, up: dict[str, Any]) -> None:
    """The .changes name must belong to the upload: ``<source>_<version w/o epoch>_*.changes``."""
    match = CHANGES_FILE.match(name)
    if match is None:
        raise ParseError(f"not a .changes file name: {name[:80]!r}")
    if up["source"] is None:
        up["source"] = match.group("source")
    elif ch.split_source(up["source"])[0] != match.group("source"):
        raise ParseError(f"{name} does not belong to source {up['source']}")
    bare = match.group("version")
    if up["version"] is None:
        up["version"] = bare
    elif up["version"].split(":", 1)[-1] != bare:
        raise ParseError(f"{name} does not belong to version {up['version']}")


def _suites(text: str | None) -> tuple[str, list[str], list[str]]:
    """dak's ``__SUITE__`` (``a, b->queue``; ``(none)``) -> (text, suites, policy queues)."""
    text = " ".join((text or "").split())
    if not text or text == "(none)":
        return "(none)", [], []
    suites, queues = [], []
    for item in re.split(r"\s*,\s*", text):
        match = SUITE_ITEM.match(item)
        if match is None:
            raise ParseError(f"not a suite name: {item[:60]!r}")
        suites.append(match.group("suite"))
        if match.group("queue"):
            queues.append(match.group("queue"))
    return text, suites, queues


def _identity(up: dict[str, Any]) -> str:
    archs = "+".join(sorted(up["architectures"]))
    if archs:
        return f"{ch.split_source(up['source'])[0]}_{up['version']}_{archs}"
    return up["changes_file"] or f"{up['source']}_{up['version']}"


def _common(mail: Mail) -> dict[str, Any]:
    return {"message_id": mail.message_id, "mail": mail.kind, "program": mail.program,
            "signature": mail.verdict.body()}


def _usernames(up: dict[str, Any]) -> tuple[str, ...]:
    """The message type's rule (from the body alone), so the event and its type agree."""
    return tuple(debian_logins([up.get("changed_by"), up.get("maintainer")]))


def _event(mail: Mail, event: str, key: str, body: dict[str, Any], *, obj: str = "package",
           packages: tuple[str, ...] = (), usernames: tuple[str, ...] = ()) -> Event:
    return Event(service="dak", object=obj, event=event, key=key, body=body,
                 packages=packages, usernames=usernames, time=mail.time)


def _accept(mail: Mail) -> list[Event]:
    announcement = mail.kind in ("announce", "installed-announce")
    up = _upload(mail, need_changes=announcement or mail.signed)
    suite_given = mail.subject_fields.get("suite") or mail.header("Debian-Suite")
    if mail.subject_fields.get("suite") and mail.header("Debian-Suite"):
        _agree("suite", " ".join(mail.subject_fields["suite"].split()),
               " ".join(mail.header("Debian-Suite").split()))  # type: ignore[union-attr]
    suite_text, suites, queues = _suites(suite_given or up["distribution"])
    action = mail.action or ("policy" if queues else "accept")
    body = {**up, "suite": suite_text, "suites": suites, "queues": queues, "action": action,
            **_common(mail)}
    key = f"dak:accept:{_identity(up)}:{suite_text}"
    source = ch.split_source(up["source"])[0]
    return [_event(mail, "accept", key, body, packages=(source,), usernames=_usernames(up))]


def _new(mail: Mail) -> list[Event]:
    up = _upload(mail, need_changes=False)
    warnings = mail.body.split(_NEW_BLURB, 1)[0].strip() if _NEW_BLURB in mail.body else None
    body = {**up, "warnings": _cap(warnings), **_common(mail)}
    key = f"dak:new:{up['changes_file'] or _identity(up)}:{mail.fingerprint()}"
    return [_event(mail, "new", key, body, packages=(ch.split_source(up["source"])[0],),
                   usernames=_usernames(up))]


def _reject(mail: Mail) -> list[Event]:
    up = _upload(mail, need_changes=False)
    kind = (mail.header("X-DAK-Rejection") or "").strip().lower() or None
    if kind not in (None, "automatic", "manual"):
        raise ParseError(f"unknown X-DAK-Rejection {kind[:40]!r}")
    reason = _REJECT_FOOTER.split(mail.body, 1)[0].strip()
    body = {**up, "rejection": kind, "rejected_by": mail.sender if kind == "manual" else None,
            "reason": _cap(reason) or None, **_common(mail)}
    key = f"dak:reject:{up['changes_file'] or _identity(up)}:{mail.fingerprint()}"
    return [_event(mail, "reject", key, body, packages=(ch.split_source(up["source"])[0],),
                   usernames=_usernames(up))]


def _comment(mail: Mail) -> list[Event]:
    up = _upload(mail, need_changes=False)
    body = {**up, "comment": _cap(mail.body.strip()) or None, "from": mail.sender,
            **_common(mail)}
    key = f"dak:comment:{up['changes_file'] or _identity(up)}:{mail.fingerprint()}"
    return [_event(mail, "comment", key, body, packages=(ch.split_source(up["source"])[0],),
                   usernames=_usernames(up))]


def _bug_close(mail: Mail) -> list[Event]:
    bug = int(mail.subject_fields["bug"])
    up = _upload(mail, need_changes=mail.signed)
    done = re.search(r"^Done: (.+)$", mail.body, re.M)
    suite_text, suites, queues = _suites(mail.header("Debian-Suite") or up["distribution"])
    if up["closes"] and bug not in up["closes"]:
        raise ParseError(f"bug {bug} is not in the Closes field of the quoted .changes")
    body = {**up, "bug": bug, "done_by": " ".join(done.group(1).split()) if done else None,
            "closed_by": "upload", "suite": suite_text, "suites": suites, "queues": queues,
            **_common(mail)}
    source = ch.split_source(up["source"])[0]
    key = f"dak:bug-close:{bug}:{source}_{up['version']}"
    return [_event(mail, "close", key, body, obj="bug", packages=(source,),
                   usernames=_usernames(up))]


# -- removals ------------------------------------------------------------------------------

_RELATED = re.compile(r"as the package (?P<source>\S+) has just been removed", re.S)
_RM_VERSION = re.compile(r"^Version: (?P<version>\S+)\+rm\s*$", re.M)
_WHOAMI = re.compile(r"^pp\.\n(?P<who>.+?) \(the ftpmaster behind the curtain\)", re.M)


def _remove(mail: Mail) -> list[Event]:
    bug = int(mail.subject_fields["bug"]) if "bug" in mail.subject_fields else None
    suite_text = mail.header("Debian-Suite") or mail.subject_fields.get("suites")
    if suite_text is None:
        raise ParseError("removal mail names no suite")
    if mail.subject_fields.get("suites") and mail.header("Debian-Suite"):
        _agree("suites", ",".join(removal.split_suites(mail.subject_fields["suites"])),
               ",".join(removal.split_suites(mail.header("Debian-Suite"))))  # type: ignore[arg-type]
    suites = removal.split_suites(suite_text)
    rows = removal.rows_from_summary(mail.body)
    if not rows:
        related = _RELATED.search(mail.body)
        version = _RM_VERSION.search(mail.body)
        if related and version:
            return _related_closures(mail, related.group("source"), version.group("version"),
                                     suites)
        raise ParseError("removal mail has no package | version | architectures table")
    sources = sorted({r["package"] for r in rows if "source" in r["architectures"]})
    header_sources = mail.header("Debian-Source")
    if header_sources is not None:
        named = sorted(set(re.split(r"[\s,]+", header_sources.strip())) - {""})
        if sources and named != sources:
            raise ParseError("Debian-Source disagrees with the removed source rows")
    who = _WHOAMI.search(mail.body)
    body = {
        "suites": suites,
        "suite_text": " ".join(suite_text.split()),
        "rows": rows,
        "sources": sources,
        "reason": removal.reason_from_summary(mail.body),
        "bugs": [bug] if bug is not None else [],
        "also_bugs": [],
        "also_wnpp": [],
        "removed_by": who.group("who").strip() if who else None,
        "date": mail.header("Date"),
        "origin": "mail",
        **_common(mail),
    }
    packages = tuple(sources or sorted({r["package"] for r in rows}))
    return [_event(mail, "remove", removal.removal_key(suites, rows), body, packages=packages)]


def _related_closures(mail: Mail, source: str, version: str, suites: list[str]) -> list[Event]:
    """``rm.bug-close-related``: other open bugs of a removed source, closed as ``<ver>+rm``."""
    ch.split_source(source)
    ch.check_version(version)
    bugs = []
    # dak ends the list with a comma; Python's strict address parser (CVE-2023-27043, in
    # Debian 12's 3.11.2 and upstream 3.11.10+) then returns one empty pair for the field.
    to = [value.strip().rstrip(",") for value in mailparse.headers(mail.message, "To")]
    for _, address in getaddresses(to):
        match = re.fullmatch(r"(\d{1,9})-(?:done|close)@.+", address.strip().lower())
        if match:
            bugs.append(int(match.group(1)))
    if not bugs:
        raise ParseError("removal bug-close mail is addressed to no bug")
    events = []
    for bug in sorted(set(bugs)):
        body = {
            "bug": bug, "source": source, "version": f"{version}+rm", "closed_by": "removal",
            "suites": suites, "removal_bug": int(mail.subject_fields.get("bug", 0)) or None,
            **_common(mail),
        }
        events.append(_event(mail, "close", f"dak:bug-close:{bug}:{source}_{version}+rm", body,
                             obj="bug", packages=(source,)))
    return events


# -- upload queue ----------------------------------------------------------------------------

_QUEUE_OK = re.compile(r"^(?P<file>\S+) uploaded successfully to (?P<target>\S+)\s*$", re.M)
_QUEUE_HOST = re.compile(r"Your Debian queue daemon \(running on host (?P<host>[^)\s]+)\)")


def _process(mail: Mail) -> list[Event]:
    name = mail.subject_fields["file"]
    if not ch.SAFE_FILE.match(name):
        raise ParseError(f"not an upload file name: {name[:80]!r}")
    ok = _QUEUE_OK.search(mail.body)
    files: list[str] = []
    if ok:
        if ok.group("file") != name:
            raise ParseError(f"queue report for {name} reports on {ok.group('file')}")
        status = "success"
        tail = mail.body[ok.end():]
        listing = re.match(r"\s*along with the files:\n((?:[ \t]+\S+\n?)*)", tail)
        if listing:
            files = [f.strip() for f in listing.group(1).splitlines() if f.strip()]
    elif "will be retried" in mail.body:
        status = "retry"
    else:
        status = "failure"
    for entry in files:
        if not ch.SAFE_FILE.match(entry):
            raise ParseError(f"queue report lists a bad file name: {entry[:80]!r}")
    host = _QUEUE_HOST.search(mail.body)
    packages = sorted(set((mail.header("X-Debian-Package") or "").split()))
    text = mail.body.split("\nGreetings,", 1)[0].strip()
    body = {
        "file": name, "status": status, "target": ok.group("target") if ok else None,
        "files": files, "packages": packages, "host": host.group("host") if host else None,
        "text": _cap(text), **_common(mail),
    }
    key = f"dak:process:{name}:{mail.fingerprint()}"
    return [_event(mail, "process", key, body, obj="upload", packages=tuple(packages))]


# -- helpers ---------------------------------------------------------------------------------


def _cap(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "\n[... truncated]"


_BUILDERS = {
    "announce": _accept,
    "installed-announce": _accept,
    "accepted": _accept,
    "installed": _accept,
    "new": _new,
    "rejected": _reject,
    "prod": _comment,
    "bug-close": _bug_close,
    "rm": _remove,
    "queue": _process,
}
