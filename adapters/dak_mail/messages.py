"""Message types of the ``dak.*`` topics: body schema, summary, link, users, packages.

One class per topic. Everything is computed from the body alone (a consumer on
another machine sees what the publisher saw), and every property copes with a
body that does not match the schema (``busgate tail`` shows what any publisher
sent), so a bad body gives a plainer line, never an exception.

Links point at Debian's services (dak is Debian's archive software and its mail
names no other site): the package tracker for uploads, the NEW queue viewer for
packages waiting in NEW, the bug tracker for closed bugs and removal requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.messages import WARNING, Message, clip, counts_as

#: Package tracker page of a source package: ``<TRACKER><source>``.
TRACKER = "https://tracker.debian.org/pkg/"
#: ftp-master's NEW queue page of an upload: ``<NEW_QUEUE><source>_<version w/o epoch>.html``.
NEW_QUEUE = "https://ftp-master.debian.org/new/"
#: Bug page: ``<BUGS><number>``.
BUGS = "https://bugs.debian.org/"
#: A comment's first line up to this long and ending in "," is a greeting, not its gist.
GREETING_CHARS = 30
#: Most package names a removal summary lists before "and N more".
SUMMARY_NAMES = 3

# -- schema fragments ---------------------------------------------------------------------

_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_ID = "https://busgate.example/schemas/{}.json"
#: The patterns the parser enforces (adapters.dak_mail.changes), so the schema says them too.
SOURCE_PATTERN = r"^[a-z0-9][a-z0-9+.-]+$"
VERSION_PATTERN = r"^[0-9][0-9A-Za-z.+~:-]*$"
ARCH_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
SUITE_PATTERN = r"^[a-z0-9][a-z0-9.+-]*$"
#: A removal's suite may name a policy queue (``a->b``).
REMOVAL_SUITE_PATTERN = r"^[a-z0-9][a-z0-9.+-]*(->[a-z0-9][a-z0-9.+-]*)?$"
FILE_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.~+-]*$"
PACKAGE_PATTERN = r"^[a-z0-9][a-z0-9+.-]*$"
_HEX = {"type": "string", "pattern": "^[0-9a-f]+$"}
_TEXT_OR_NULL: dict[str, Any] = {"type": ["string", "null"]}
_BUG = {"type": "integer", "minimum": 1}
#: Which dak mail an event came from (``mail``), per topic.
MAIL_KINDS = ("announce", "installed-announce", "accepted", "installed", "new", "rejected",
              "prod", "bug-close", "rm", "queue")


def _mail(*kinds: str | None) -> dict[str, Any]:
    return {"enum": list(kinds),
            "description": "Which dak mail it was: " + ", ".join(MAIL_KINDS)
            + " (null for removals.822)."}


_SIGNATURE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["status", "fingerprint"],
    "description": "dak's OpenPGP signature over the mail, as checked with gpgv against "
                   "dak.keyring (absent for events read from removals.822).",
    "properties": {
        "status": {
            "enum": ["valid", "missing", "bad", "no-key", "expired", "revoked", "error",
                     "unchecked"],
            "description": "valid: a good signature by a key in dak.keyring; unchecked: "
                           "dak.signatures = ignore; other values are published only with "
                           "dak.signatures = mark.",
        },
        "fingerprint": {"type": ["string", "null"],
                        "description": "fingerprint of the signing key (when known)"},
    },
}


def _common(*kinds: str | None) -> dict[str, Any]:
    """Where the event came from: every dak body ends with these."""
    return {
        "message_id": {"type": ["string", "null"],
                       "description": "Message-Id of the mail the event came from "
                                      "(null for removals.822)."},
        "mail": _mail(*kinds),
        "program": {"type": ["string", "null"],
                    "description": "The X-DAK header (e.g. 'dak process-upload'), when present."},
        "signature": _SIGNATURE,
    }


_COMMON_REQUIRED = ["message_id", "mail", "program"]

_FILE = {
    "type": "object",
    "required": ["name", "size"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": FILE_PATTERN},
        "size": {"type": "integer", "minimum": 0},
        "md5": _HEX,
        "sha1": _HEX,
        "sha256": _HEX,
        "sha512": _HEX,
        "section": _TEXT_OR_NULL,
        "priority": _TEXT_OR_NULL,
    },
}

#: An upload as the mail and its quoted .changes describe it (adapters.dak_mail.parser._upload).
_UPLOAD: dict[str, Any] = {
    "source": {"type": "string", "pattern": SOURCE_PATTERN,
               "description": "Source package name."},
    "version": {"type": "string", "pattern": VERSION_PATTERN,
                "description": "Version (with epoch when the mail carries the .changes; "
                               "from the file name otherwise)."},
    "source_version": {"type": "string", "pattern": VERSION_PATTERN,
                       "description": "Source version when it differs "
                                      "(binNMU: Source: name (version))."},
    "architectures": {"type": "array", "items": {"type": "string", "pattern": ARCH_PATTERN},
                      "description": "Architecture field of the .changes, split ('source', "
                                     "'all', concrete arches); [] when unknown."},
    "distribution": {"type": ["string", "null"],
                     "description": "Distribution field of the .changes."},
    "urgency": {"type": ["string", "null"], "description": "Urgency of the upload, lowercase."},
    "maintainer": {"type": ["string", "null"], "description": "Maintainer field (name <address>)."},
    "changed_by": {"type": ["string", "null"],
                   "description": "Changed-By field (name <address>): who made the upload."},
    "date": {"type": ["string", "null"],
             "description": "Date field of the .changes (RFC 2822 text)."},
    "closes": {"type": "array", "items": _BUG, "description": "Bugs in the Closes field, sorted."},
    "changes": {"type": ["string", "null"],
                "description": "The changelog text of the upload (Changes field, ' .' lines "
                               "made empty)."},
    "files": {"type": "array", "items": _FILE,
              "description": "Files of the upload: Files merged with Checksums-*."},
    "binaries": {"type": "array", "items": {"type": "string"},
                 "description": "Binary packages of the upload (Binary field)."},
    "changes_file": {"type": ["string", "null"], "pattern": FILE_PATTERN,
                     "description": "The .changes file name, when the mail names it "
                                    "(subject or Debian-Changes)."},
    "sourceful": {"type": "boolean",
                  "description": "The upload carries source ('source' in architectures)."},
}
_UPLOAD_REQUIRED = [k for k in _UPLOAD if k != "source_version"]

_TARGET: dict[str, Any] = {
    "suite": {"type": "string",
              "description": "Target as dak wrote it: 'unstable', 'a, b', "
                             "'proposed-updates->stable-new', '(none)'."},
    "suites": {"type": "array", "items": {"type": "string", "pattern": SUITE_PATTERN},
               "description": "Suite names (policy queue part removed)."},
    "queues": {"type": "array", "items": {"type": "string", "pattern": SUITE_PATTERN},
               "description": "Policy queues the upload went to ([] for real suites)."},
}


def _object_schema(topic: str, title: str, properties: dict[str, Any],
                   required: list[str]) -> dict[str, Any]:
    return {"$schema": _SCHEMA, "$id": _ID.format(topic), "title": f"{topic}: {title}",
            "type": "object", "properties": properties, "additionalProperties": False,
            "required": required}


def _upload_schema(topic: str, title: str, extra: dict[str, Any],
                   kinds: tuple[str, ...]) -> dict[str, Any]:
    return _object_schema(topic, title, {**_UPLOAD, **extra, **_common(*kinds)},
                          _UPLOAD_REQUIRED + list(extra) + _COMMON_REQUIRED)


# -- reading a body that may be anything --------------------------------------------------


def _text(body: Any, key: str) -> str:
    value = body.get(key) if isinstance(body, Mapping) else None
    return value if isinstance(value, str) else ""


def _list(body: Any, key: str) -> list[Any]:
    value = body.get(key) if isinstance(body, Mapping) else None
    return value if isinstance(value, list) else []


def _int(body: Any, key: str) -> int | None:
    value = body.get(key) if isinstance(body, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def source_name(text: str) -> str:
    """``hebcal`` of ``hebcal`` or ``hebcal (4.31-1)`` (a binNMU's Source field)."""
    return text.split(" ", 1)[0] if text else ""


def person(address: str) -> str:
    """The name of ``Name <addr>`` (the address when there is no name; a bare name as is)."""
    if "@" not in address:
        return " ".join(address.split())
    from email.utils import parseaddr  # here: a consumer loading every type need not pay it

    name, addr = parseaddr(address)
    return " ".join((name or addr or address).split())


def debian_logins(addresses: Iterable[str | None]) -> list[str]:
    """Debian account names: the local part of each ``@debian.org`` address, in order."""
    from email.utils import getaddresses

    names: list[str] = []
    for _, address in getaddresses([a for a in addresses if isinstance(a, str) and a]):
        local, _, domain = address.lower().partition("@")
        if domain == "debian.org" and re.fullmatch(r"[a-z0-9][a-z0-9._-]*", local) \
                and local not in names:
            names.append(local)
    return names


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def tracker(source: str) -> str | None:
    return TRACKER + source if re.fullmatch(SOURCE_PATTERN[1:-1], source or "") else None


# -- the types ----------------------------------------------------------------------------


class DakMessage(Message):
    """Base of the ``dak.*`` types (an upload: its source is the package)."""

    @property
    def source(self) -> str:
        return source_name(_text(self.body, "source"))

    @property
    def upload(self) -> str:
        """``hebcal 4.31-1``, plus ``(amd64)`` for an upload without source."""
        text = " ".join(p for p in (self.source, _text(self.body, "version")) if p) or "upload"
        archs = [a for a in _list(self.body, "architectures") if isinstance(a, str)]
        if archs and "source" not in archs:
            text += f" ({' '.join(archs)})"
        return text

    @property
    def uploader(self) -> str:
        """`` (Name)`` of Changed-By (else Maintainer), or nothing."""
        who = _text(self.body, "changed_by") or _text(self.body, "maintainer")
        return f" ({person(who)})" if who else ""

    @property
    def url(self) -> str | None:
        return tracker(self.source)

    @property
    def usernames(self) -> list[str]:
        return debian_logins([_text(self.body, "changed_by"), _text(self.body, "maintainer")])

    @property
    def packages(self) -> list[str]:
        return [self.source] if self.source else []


class PackageAccept(DakMessage):
    """An upload was accepted into a suite (or held in a policy queue)."""

    name = "busgate.dak.package.accept.v1"
    topic_tokens = ("dak", "package", "accept")
    overview = counts_as({"accept": ("uploads", "accepted")})
    body_schema = _upload_schema(
        "dak.package.accept", "an upload was accepted into a suite or a policy queue",
        {**_TARGET, "action": {"enum": ["accept", "policy"],
                               "description": "accept: into the suites; policy: held in a "
                                              "policy queue for them."}},
        ("announce", "installed-announce", "accepted", "installed"))

    @property
    def summary(self) -> str:
        suites = ", ".join(s for s in _list(self.body, "suites") if isinstance(s, str))
        queues = ", ".join(q for q in _list(self.body, "queues") if isinstance(q, str))
        target = f" into {suites}" if suites else ""
        if queues:
            target += f" via {queues}"
        return clip(f"{self.upload} accepted{target}{self.uploader}")


class PackageNew(DakMessage):
    """An upload went to the NEW queue (new source or binary packages): ftp-master reviews it."""

    name = "busgate.dak.package.new.v1"
    topic_tokens = ("dak", "package", "new")
    body_schema = _upload_schema(
        "dak.package.new", "an upload went to the NEW queue",
        {"warnings": {"type": ["string", "null"],
                      "description": "What dak's checks said about the upload, if anything."}},
        ("new",))

    @property
    def summary(self) -> str:
        return clip(f"{self.upload} is NEW{self.uploader}")

    @property
    def url(self) -> str | None:
        return new_queue(self.source, _text(self.body, "version"))


class PackageReject(DakMessage):
    """An upload was rejected, by dak's checks or by an ftp-master."""

    name = "busgate.dak.package.reject.v1"
    topic_tokens = ("dak", "package", "reject")
    severity = WARNING
    body_schema = _upload_schema(
        "dak.package.reject", "an upload was rejected",
        {"rejection": {"enum": ["automatic", "manual", None],
                       "description": "X-DAK-Rejection: automatic (dak's checks) or manual "
                                      "(an ftp-master); null when the mail does not say."},
         "rejected_by": {"type": ["string", "null"],
                         "description": "Who rejected it (manual rejections)."},
         "reason": {"type": ["string", "null"], "description": "The rejection text."}},
        ("rejected",))

    @property
    def summary(self) -> str:
        who = _text(self.body, "rejected_by")
        by = f" by {person(who)}" if who else ""
        reason = first_line(_text(self.body, "reason"))
        return clip(f"{self.upload} rejected{by}" + (f": {reason}" if reason else ""))


class PackageComment(DakMessage):
    """ftp-master wrote to the uploader about a package in NEW (a "prod")."""

    name = "busgate.dak.package.comment.v1"
    topic_tokens = ("dak", "package", "comment")
    body_schema = _upload_schema(
        "dak.package.comment", "ftp-master commented on an upload in NEW (prod)",
        {"comment": {"type": ["string", "null"], "description": "The comment text."},
         "from": {"type": ["string", "null"], "description": "Who wrote it (From header)."}},
        ("prod",))

    @property
    def summary(self) -> str:
        who = person(_text(self.body, "from")) or "ftp-master"
        lines = [line.strip() for line in _text(self.body, "comment").splitlines()
                 if line.strip()]
        if len(lines) > 1 and lines[0].endswith(",") and len(lines[0]) <= GREETING_CHARS:
            lines = lines[1:]  # "Hi," / "Dear maintainer,": the first line that says something
        comment = lines[0] if lines else ""
        return clip(f"{who} commented on {self.upload} in NEW"
                    + (f': "{comment}"' if comment else ""))

    @property
    def url(self) -> str | None:
        return new_queue(self.source, _text(self.body, "version"))


_BUG_CLOSE_SCHEMA: dict[str, Any] = {
    "$schema": _SCHEMA,
    "$id": _ID.format("dak.bug.close"),
    "title": "dak.bug.close: a bug was closed by an accepted upload (Closes:) or by a "
             "package removal",
    "oneOf": [
        {
            "type": "object",
            "properties": {
                **_UPLOAD, **_TARGET,
                "bug": {**_BUG, "description": "The bug closed."},
                "done_by": {"type": ["string", "null"],
                            "description": "Who closed it (the mail's Done: line)."},
                "closed_by": {"const": "upload"},
                **_common("bug-close"),
            },
            "additionalProperties": False,
            "required": [*_UPLOAD_REQUIRED, *_TARGET, "bug", "done_by", "closed_by",
                         *_COMMON_REQUIRED],
        },
        {
            "type": "object",
            "properties": {
                "bug": {**_BUG, "description": "The bug closed."},
                "source": {"type": "string", "pattern": SOURCE_PATTERN,
                           "description": "The removed source package."},
                "version": {"type": "string", "pattern": VERSION_PATTERN,
                            "description": "The removed version with '+rm' appended."},
                "closed_by": {"const": "removal"},
                "suites": {"type": "array", "items": {"type": "string"},
                           "description": "Suites the package was removed from."},
                "removal_bug": {"type": ["integer", "null"], "minimum": 1,
                                "description": "The removal request's bug."},
                **_common("rm"),
            },
            "additionalProperties": False,
            "required": ["bug", "source", "version", "closed_by", "suites", "removal_bug",
                         *_COMMON_REQUIRED],
        },
    ],
}


class BugClose(DakMessage):
    """A bug was closed by an accepted upload (``Closes:``) or by the removal of its package."""

    name = "busgate.dak.bug.close.v1"
    topic_tokens = ("dak", "bug", "close")
    body_schema = _BUG_CLOSE_SCHEMA

    @property
    def summary(self) -> str:
        bug = _int(self.body, "bug")
        head = f"#{bug}" if bug is not None else "a bug"
        if _text(self.body, "closed_by") == "removal":
            suites = ", ".join(s for s in _list(self.body, "suites") if isinstance(s, str))
            where = f" from {suites}" if suites else ""
            return clip(f"{head} [{self.source}] closed: {self.source} removed{where}")
        who = _text(self.body, "done_by") or _text(self.body, "changed_by")
        by = f" ({person(who)})" if who else ""
        version = _text(self.body, "version")
        return clip(f"{head} [{self.source}] fixed in {self.source} {version}{by}")

    @property
    def url(self) -> str | None:
        bug = _int(self.body, "bug")
        return f"{BUGS}{bug}" if bug is not None and bug > 0 else None


class PackageRemove(DakMessage):
    """Packages were removed from suites (``dak rm``), from the mail or the removals.822 log."""

    name = "busgate.dak.package.remove.v1"
    topic_tokens = ("dak", "package", "remove")
    body_schema = _object_schema(
        "dak.package.remove", "packages were removed from suites (dak rm)",
        {
            "suites": {"type": "array", "minItems": 1,
                       "items": {"type": "string", "pattern": REMOVAL_SUITE_PATTERN},
                       "description": "Suites the packages left."},
            "suite_text": {"type": "string", "description": "The suites as dak wrote them."},
            "rows": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["package", "version", "architectures"],
                    "properties": {
                        "package": {"type": "string", "pattern": PACKAGE_PATTERN},
                        "version": {"type": "string", "pattern": VERSION_PATTERN},
                        "architectures": {"type": "array", "minItems": 1,
                                          "items": {"type": "string", "pattern": ARCH_PATTERN}},
                    },
                },
                "minItems": 1,
                "description": "Every removed package/version with its architectures "
                               "('source' included).",
            },
            "sources": {"type": "array", "items": {"type": "string"},
                        "description": "Source packages removed (rows with 'source')."},
            "reason": {"type": ["string", "null"], "description": "Why (dak rm -R / -m)."},
            "bugs": {"type": "array", "items": _BUG,
                     "description": "The removal request bugs it closes."},
            "also_bugs": {"type": "array", "items": _BUG,
                          "description": "Other bugs closed with it (removals.822)."},
            "also_wnpp": {"type": "array", "items": _BUG,
                          "description": "WNPP bugs closed with it (removals.822)."},
            "removed_by": {"type": ["string", "null"], "description": "The ftp-master."},
            "date": {"type": ["string", "null"], "description": "When (RFC 2822 text)."},
            "origin": {"enum": ["mail", "removals.822"],
                       "description": "Where the event was read from."},
            **_common("rm", None),
        },
        ["suites", "suite_text", "rows", "sources", "reason", "bugs", "also_bugs", "also_wnpp",
         "removed_by", "date", "origin", *_COMMON_REQUIRED])

    @property
    def packages(self) -> list[str]:
        sources = [s for s in _list(self.body, "sources") if isinstance(s, str) and s]
        if sources:
            return sources
        rows = [r.get("package") for r in _list(self.body, "rows") if isinstance(r, Mapping)]
        return sorted({p for p in rows if isinstance(p, str) and p})

    @property
    def summary(self) -> str:
        names = self.packages
        listed = ", ".join(names[:SUMMARY_NAMES]) or "packages"
        if len(names) > SUMMARY_NAMES:
            listed += f" and {len(names) - SUMMARY_NAMES} more"
        suites = ", ".join(s for s in _list(self.body, "suites") if isinstance(s, str))
        where = f" from {suites}" if suites else ""
        who = _text(self.body, "removed_by")
        by = f" by {person(who)}" if who else ""
        reason = first_line(_text(self.body, "reason"))
        return clip(f"{listed} removed{where}{by}" + (f": {reason}" if reason else ""))

    @property
    def url(self) -> str | None:
        bugs = [b for b in _list(self.body, "bugs") if isinstance(b, int) and b > 0]
        if bugs:
            return f"{BUGS}{bugs[0]}"
        names = self.packages
        return tracker(names[0]) if len(names) == 1 else None


class UploadProcess(DakMessage):
    """The upload queue daemon (debianqueued) reported on an uploaded file.

    A failed upload is a ``WARNING`` (set per message: the class says ``INFO``).
    """

    name = "busgate.dak.upload.process.v1"
    topic_tokens = ("dak", "upload", "process")
    body_schema = _object_schema(
        "dak.upload.process", "the upload queue daemon (debianqueued) processed a file",
        {
            "file": {"type": "string", "pattern": FILE_PATTERN,
                     "description": "The uploaded file the report is about."},
            "status": {"enum": ["success", "retry", "failure"],
                       "description": "success: handed on to target; retry: the queue tries "
                                      "again later; failure: the upload was refused."},
            "target": {"type": ["string", "null"],
                       "description": "Where a successful upload went."},
            "files": {"type": "array", "items": {"type": "string", "pattern": FILE_PATTERN},
                      "description": "Files handed on with it (success)."},
            "packages": {"type": "array", "items": {"type": "string"},
                         "description": "X-Debian-Package header, split and sorted."},
            "host": {"type": ["string", "null"], "description": "Host the queue daemon runs on."},
            "text": {"type": ["string", "null"], "description": "The report text."},
            **_common("queue"),
        },
        ["file", "status", "target", "files", "packages", "host", "text", *_COMMON_REQUIRED])

    def __init__(self, body: Any, topic: str = "", headers: Mapping[str, Any] | None = None):
        super().__init__(body, topic, headers)
        if _text(body, "status") == "failure":
            self.severity = WARNING  # type: ignore[misc]

    @property
    def packages(self) -> list[str]:
        return [p for p in _list(self.body, "packages") if isinstance(p, str) and p]

    @property
    def summary(self) -> str:
        name = _text(self.body, "file") or "upload"
        status = _text(self.body, "status")
        if status == "success":
            target = _text(self.body, "target")
            files = len(_list(self.body, "files"))
            return clip(f"{name} uploaded" + (f" to {target}" if target else "")
                        + (f" with {files} files" if files else ""))
        if status == "retry":
            return clip(f"{name}: upload will be retried")
        detail = first_line(_text(self.body, "text"))
        if not detail:
            return clip(f"{name}: upload failed")
        return clip(f"upload failed: {detail}" if name in detail
                    else f"{name}: upload failed: {detail}")

    @property
    def url(self) -> str | None:
        names = self.packages
        return tracker(names[0]) if len(names) == 1 else None


def new_queue(source: str, version: str) -> str | None:
    """The NEW queue page of an upload (``<source>_<version without epoch>.html``)."""
    bare = version.split(":", 1)[-1]
    if tracker(source) is None or not re.fullmatch(VERSION_PATTERN[1:-1], bare or ""):
        return None
    return f"{NEW_QUEUE}{source}_{bare}.html"


TYPES: list[type[Message]] = [PackageAccept, PackageNew, PackageReject, PackageComment,
                              BugClose, PackageRemove, UploadProcess]
