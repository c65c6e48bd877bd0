"""Message types of ``debbugs.bug.*``: what a bug event means, from its body alone.

Two feeds report bugs: BTS mail in real time (``via: mail``: ``report``,
``followup``, ``close``, ``forward``, ``submitter-change``) and the SOAP poller
(``via: soap``: ``new``, ``update``, ``close``, ``reopen``, ``archive``). An event
of one topic has one type whichever feed produced it; ``close`` comes from both, so
its schema is one of the two body shapes.

``usernames`` are Debian logins: the local part of people's ``@debian.org``
addresses (submitter, owner, closer, sender), as the dak types name uploaders; a
person without such an address is in the body but has no login to filter by.
``packages`` are the bug's binary and source package names (``src:`` prefix
dropped). The adapters (``mail.py``, ``status.py``) fill ``Event.usernames`` and
``Event.packages`` with :func:`people_logins` and :func:`bug_packages`, so the
envelope's filter headers and the type agree by construction.

This module imports nothing heavy: consumers (``busgate tail``, the fedmsg.meta
processor) load it to describe messages they receive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from gateway.messages import DEBUG, Message, clip, counts_as

SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE = "https://busgate.example/schemas/"
#: Longest header-derived text in a mail event (``adapters.debbugs.mail.MAX_FIELD``).
MAX_MAIL_FIELD = 1000
#: Highest bug number a mail event can carry (``X-Debian-PR-Message`` allows 9 digits).
MAX_MAIL_BUG = 999_999_999
#: Fields of a body that name people (``Name <address>``).
PEOPLE = ("submitter", "owner", "done", "from")
#: What ``update`` calls each changed field in its summary.
CHANGE_LABELS = {
    "title": "title", "severity": "severity", "tags": "tags", "package": "package",
    "source": "source", "submitter": "submitter", "owner": "owner",
    "forwarded": "forwarded", "done": "done", "archived": "archived",
    "mergedwith": "merged with", "blocks": "blocks", "blockedby": "blocked by",
    "affects": "affects", "found_versions": "found in", "fixed_versions": "fixed in",
}
_BUG_LISTS = ("mergedwith", "blocks", "blockedby")
_LOGIN = re.compile(r"[a-z0-9][a-z0-9._-]*")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]*")
_TRACKER = re.compile(r"owner@bugs\.", re.IGNORECASE)


# -- what the adapters and the types share ----------------------------------------------
def people_logins(people: Iterable[Any]) -> list[str]:
    """Debian logins of ``@debian.org`` addresses among ``people`` (strings), in order."""
    logins: list[str] = []
    for value in people:
        if not isinstance(value, str) or "@" not in value:
            continue
        from email.utils import getaddresses  # here: loading the types need not pay it

        for _name, address in getaddresses([value]):
            local, _, domain = address.lower().rpartition("@")
            if domain == "debian.org" and _LOGIN.fullmatch(local) and local not in logins:
                logins.append(local)
    return logins


def bug_packages(package: Any, source: Any) -> list[str]:
    """Package names of a bug: ``package`` (comma or space separated) then ``source``;
    ``src:`` prefixes dropped, what is not a package name left out."""
    names: list[str] = []
    words = [*_words(package, commas=True), *_words(source, commas=False)]
    for word in words:
        name = word.removeprefix("src:")
        if _PACKAGE.fullmatch(name) and name not in names:
            names.append(name)
    return names


def _words(value: Any, *, commas: bool) -> list[str]:
    if not isinstance(value, str):
        return []
    return (value.replace(",", " ") if commas else value).split()


# -- schemas ------------------------------------------------------------------------------
def _pair() -> dict[str, Any]:
    return {"type": "array", "minItems": 2, "maxItems": 2}


#: Properties of a SOAP poller body (a ``get_status`` snapshot), in body order.
SOAP_PROPERTIES: dict[str, Any] = {
    "bug": {"type": "integer", "minimum": 1, "description": "bug number"},
    "package": {"type": "string", "description": "assigned package(s), space separated"},
    "source": {"type": "string", "description": "source package(s)"},
    "title": {"type": "string", "description": "bug title (subject)"},
    "severity": {"type": "string", "minLength": 1,
                 "description": "critical, grave, serious, important, normal, minor, wishlist"},
    "tags": {"type": "array", "items": {"type": "string", "minLength": 1},
             "uniqueItems": True, "description": "tags, sorted"},
    "submitter": {"type": "string", "description": "originator, \"Name <address>\""},
    "owner": {"type": "string", "description": "who took the bug, or empty"},
    "forwarded": {"type": "string", "description": "upstream URL or address, or empty"},
    "done": {"type": "string", "description": "closer's address when closed, else empty"},
    "archived": {"type": "boolean"},
    "link": {"type": "string", "format": "uri", "minLength": 1,
             "description": "bug page (debbugs.link)"},
    "via": {"const": "soap", "description": "seen by the SOAP poller"},
}
CHANGES: dict[str, Any] = {
    "type": "object",
    "description": "field -> [old, new]",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {name: _pair() for name in CHANGE_LABELS},
}
#: X-Debian-PR-Message types the mail adapter turns into events, by event.
MAIL_TYPES = {"report": ["report"], "followup": ["followup"],
              "close": ["closed", "they-closed"], "forward": ["forwarded"],
              "submitter-change": ["submitter-changed"]}


def _mail_properties(verb: str) -> dict[str, Any]:
    text = {"type": "string", "maxLength": MAX_MAIL_FIELD}
    properties: dict[str, Any] = {
        "bug": {"type": "integer", "minimum": 1, "maximum": MAX_MAIL_BUG},
        "type": {"enum": MAIL_TYPES[verb],
                 "description": "X-Debian-PR-Message type (report, followup, closed, "
                                "forwarded, they-closed, submitter-changed)"},
        "package": {**text, "description": "X-Debian-PR-Package"},
        "source": {**text, "description": "X-Debian-PR-Source (empty when unknown)"},
        "title": {**text, "description": "Subject without the Bug#N: prefix"},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 1},
                 "description": "X-Debian-PR-Keywords"},
        "from": {**text, "description": "From of the message"},
        "message_id": {**text, "description": "Message-ID of the message"},
        "link": {"type": "string", "format": "uri", "minLength": 1},
        "via": {"const": "mail", "description": "from BTS mail, real time"},
    }
    if verb == "close":
        properties["title"] = {
            "type": ["string", "null"], "maxLength": MAX_MAIL_FIELD,
            "description": "bug title, as in the SOAP variant: the subject without "
                           "'Bug#N:' (and without the tracker's 'marked as done (...)' "
                           "wrapper); null when the mail does not carry it (dak's 'fixed in "
                           "<source> <version>' and a 'closed by' notice quoting it)"}
        properties["from"] = {**text, "description": "the closer, 'Name <address>' (the same "
                                                     "as done; never the bug tracker)"}
        properties["done"] = {**text, "description": "the closer, 'Name <address>', as in the "
                                                     "SOAP variant's done"}
    return properties


def _object(properties: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False,
            "required": sorted(properties), "properties": dict(properties)}


def soap_schema(verb: str, description: str, *, changes: bool = True) -> dict[str, Any]:
    props = dict(SOAP_PROPERTIES)
    if changes:
        props["changes"] = CHANGES
    return _document(verb, description, _object(props))


def mail_schema(verb: str, description: str) -> dict[str, Any]:
    return _document(verb, description, _object(_mail_properties(verb)))


def _document(verb: str, description: str, shape: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": SCHEMA_DRAFT, "$id": f"{SCHEMA_BASE}debbugs.bug.{verb}.json",
            "title": f"debbugs.bug.{verb}",
            "description": f"Body (msg) of org.<distribution>.<env>.debbugs.bug.{verb}: "
                           + description, **shape}


# -- the types ----------------------------------------------------------------------------
class BugMessage(Message):
    """A ``debbugs.bug.<verb>`` event (either feed): link, people and packages of a bug."""

    verb: ClassVar[str] = ""

    @property
    def _body(self) -> Mapping[str, Any]:
        return self.body if isinstance(self.body, Mapping) else {}

    @property
    def url(self) -> str | None:
        link = self._body.get("link")
        return link if isinstance(link, str) and link else None

    @property
    def usernames(self) -> list[str]:
        return people_logins(self._body.get(field) for field in PEOPLE)

    @property
    def packages(self) -> list[str]:
        return bug_packages(self._body.get("package"), self._body.get("source"))

    @property
    def summary(self) -> str:
        if not isinstance(self.body, Mapping):
            return super().summary
        return clip(f"{self._bug_label()} {self._what()}".strip())

    def _what(self) -> str:
        """What happened, after ``#N [package] "title"``."""
        return self.verb

    def _bug_label(self) -> str:
        """``#N [package] "title"`` (parts left out when the body lacks them)."""
        body = self._body
        parts = [f"#{body.get('bug')}"]
        package = " ".join(word.removeprefix("src:") for word in _words(
            body.get("package"), commas=False)) or _text(body.get("source"))
        if package:
            parts.append(f"[{package}]")
        title = _text(body.get("title"))
        if title:
            parts.append(f'"{title}"')
        return " ".join(parts)

    def _by(self, field: str) -> str:
        """`` by <name>``; nothing when unknown or the tracker itself (``owner@bugs.*``)."""
        from email.utils import parseaddr

        value = self._body.get(field)
        if isinstance(value, str) and _TRACKER.match(parseaddr(value)[1]):
            return ""
        who = person(value)
        return f" by {who}" if who else ""


class BugNew(BugMessage):
    """A bug the SOAP poller sees for the first time."""

    verb = "new"
    name = "busgate.debbugs.bug.new.v1"
    topic_tokens = ("debbugs", "bug", "new")
    overview = counts_as({"new": ("bugs_opened", "opened")})
    body_schema = soap_schema("new", "a bug first seen by the SOAP poller (submitted since "
                              "the last poll, or --backfill).", changes=False)

    def _what(self) -> str:
        severity = _text(self._body.get("severity"))
        grade = f" ({severity})" if severity and severity != "normal" else ""
        return f"reported{self._by('submitter')}{grade}"


class BugReport(BugMessage):
    """A new bug report, from the BTS mail that acknowledges it."""

    verb = "report"
    name = "busgate.debbugs.bug.report.v1"
    topic_tokens = ("debbugs", "bug", "report")
    overview = counts_as({"report": ("bugs_opened", "opened")})
    body_schema = mail_schema("report", "a new bug report, from BTS mail "
                              "(X-Debian-PR-Message: report N).")

    def _what(self) -> str:
        return f"reported{self._by('from')}"


class BugFollowup(BugMessage):
    verb = "followup"
    name = "busgate.debbugs.bug.followup.v1"
    topic_tokens = ("debbugs", "bug", "followup")
    body_schema = mail_schema("followup", "a message to a bug, from BTS mail.")

    def _what(self) -> str:
        return f"followed up{self._by('from')}"


class BugForward(BugMessage):
    verb = "forward"
    name = "busgate.debbugs.bug.forward.v1"
    topic_tokens = ("debbugs", "bug", "forward")
    body_schema = mail_schema("forward", "a bug forwarded upstream, from BTS mail.")

    def _what(self) -> str:
        return f"forwarded upstream{self._by('from')}"


class BugSubmitterChange(BugMessage):
    verb = "submitter-change"
    name = "busgate.debbugs.bug.submitter-change.v1"
    topic_tokens = ("debbugs", "bug", "submitter-change")
    body_schema = mail_schema("submitter-change", "a bug's submitter changed, from BTS mail.")

    def _what(self) -> str:
        return f"submitter changed{self._by('from')}"


class BugClose(BugMessage):
    """A bug closed: by BTS mail (``via: mail``) or else seen by the poller (``via: soap``)."""

    verb = "close"
    name = "busgate.debbugs.bug.close.v1"
    topic_tokens = ("debbugs", "bug", "close")
    overview = counts_as({"close": ("bugs_closed", "closed")})
    body_schema = _document("close", "a bug was closed; reported once, by BTS mail (via=mail, "
                            "X-Debian-PR-Message: closed/they-closed N) or else by the SOAP "
                            "poller (via=soap, with changes).",
                            {"oneOf": [_object({**SOAP_PROPERTIES, "changes": CHANGES}),
                                       _object(_mail_properties("close"))]})

    def _what(self) -> str:
        fixed = _added(self._changes().get("fixed_versions"))
        return f"closed{self._by('done')}" + (f" (fixed in {', '.join(fixed)})" if fixed else "")

    def _changes(self) -> Mapping[str, Any]:
        changes = self._body.get("changes")
        return changes if isinstance(changes, Mapping) else {}


class BugReopen(BugMessage):
    verb = "reopen"
    name = "busgate.debbugs.bug.reopen.v1"
    topic_tokens = ("debbugs", "bug", "reopen")
    body_schema = soap_schema("reopen", "a closed bug was reopened (done emptied).")

    def _what(self) -> str:
        return "reopened"


class BugArchive(BugMessage):
    """Archiving is the tracker's housekeeping (weeks after a close): DEBUG."""

    verb = "archive"
    name = "busgate.debbugs.bug.archive.v1"
    topic_tokens = ("debbugs", "bug", "archive")
    body_schema = soap_schema("archive", "a bug was archived.")
    severity = DEBUG

    def _what(self) -> str:
        return "archived"


class BugUpdate(BugMessage):
    verb = "update"
    name = "busgate.debbugs.bug.update.v1"
    topic_tokens = ("debbugs", "bug", "update")
    body_schema = soap_schema("update", "a watched bug's status changed (severity, tags, "
                              "title, owner, forwarded, merges/blocks, versions...).")

    def _what(self) -> str:
        changes = self._body.get("changes")
        if not isinstance(changes, Mapping) or not changes:
            return "updated"
        described = [describe_change(field, pair) for field, pair in changes.items()]
        return "updated: " + "; ".join(d for d in described if d)


def describe_change(field: str, pair: Any) -> str:
    """``severity normal -> serious``, ``tags +patch -moreinfo``, ``owner Name``..."""
    label = CHANGE_LABELS.get(field, field)
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        return label
    old, new = pair
    if isinstance(old, list) or isinstance(new, list):
        mark = "#" if field in _BUG_LISTS else ""
        moves = [f"+{mark}{v}" for v in _added([old, new])]
        moves += [f"-{mark}{v}" for v in _added([new, old])]
        return f"{label} {' '.join(moves)}" if moves else label
    if isinstance(new, bool):
        return label if new else f"not {label}"
    if field in PEOPLE:
        old, new = person(old), person(new)
    old, new = _text(old), _text(new)
    if not new:
        return f"{label} cleared"
    return f"{label} {old} -> {new}" if old else f"{label} {new}"


def person(value: Any) -> str:
    """The name of ``Name <address>``, else the address (``""`` for nothing)."""
    if not isinstance(value, str):
        return ""
    from email.utils import parseaddr

    name, address = parseaddr(value)
    return " ".join((name or address or value).split())


def _added(pair: Any) -> list[str]:
    """Items in ``pair[1]`` that are not in ``pair[0]`` (lists), as text."""
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        return []
    old, new = (p if isinstance(p, list) else [] for p in pair)
    return [str(v) for v in new if v not in old]


def _text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    return " ".join(str(value).split())


TYPES: list[type[Message]] = [BugNew, BugUpdate, BugClose, BugReopen, BugArchive, BugReport,
                              BugFollowup, BugForward, BugSubmitterChange]
