"""Real-time bug events from the mail the bug tracker re-sends.

debbugs re-sends every processed message with ``X-Loop: owner@bugs...`` and
``X-Debian-PR-Message: <type> <bug>``; that header says what happened
(``report`` = a new bug, ``closed`` = mail to ``-done``...). Each such mail
becomes one ``debbugs.bug.<event>`` event right away; the poller later sees the
same change in ``get_status`` and stays silent about it: the event carries a
``source_facts`` row (bug, verb; :mod:`.facts`) that the poller consumes.

A bug is closed in three mail forms, all one ``debbugs.bug.close``: the copy of
the ``-done`` mail (often dak's ``Bug#N: fixed in <source> <version>``), the
acknowledgement to the closer ``Bug#N: marked as done (<title>)`` and the notice
to the submitter ``Bug#N closed by <closer> (<subject>)``; the last two are also
recognised by subject alone when a copy lost its ``X-Debian-PR-*`` headers.
A close event means what the poller's does: ``title`` is the bug's title (None
when the mail does not carry it) and ``done`` the closer, never the tracker.

Addresses are given as ``Name <address>`` whether the mail wrote that or the
old ``address (Name)``. Links come from the configured ``debbugs.link``, never
from a header.

The key is built from the bug, the event and the original Message-Id, so the
copies of one message the BTS sends to several lists are stored once; for the
tracker's two closing notices that is the closing mail's id they refer to, so a
closure is one event whichever of its three mails comes first.
"""

from __future__ import annotations

import hashlib
import re
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

import adapters.debbugs.facts as facts
from adapters import mailparse
from adapters.debbugs.messages import PEOPLE, bug_packages, people_logins
from adapters.mailparse import date_to_epoch
from gateway.errors import ParseError
from gateway.event import Event

#: X-Debian-PR-Message type -> event verb. Other types (doc requests, errors) are not events.
MESSAGE_EVENTS = {
    "report": "report",
    "followup": "followup",
    "closed": "close",
    "forwarded": "forward",
    "they-closed": "close",
    "submitter-changed": "submitter-change",
}

_PR_MESSAGE = re.compile(r"^\s*([a-z][a-z-]*)(?:\s+(\d{1,9}))?\s*$", re.IGNORECASE)
_SUBJECT = re.compile(r"^(?:(?:re|fwd?|aw)\s*:\s*)*bug\s*#\s*(\d{1,9})\s*:\s*(.*)$",
                      re.IGNORECASE | re.DOTALL)
#: ``marked as done (<title>)``: debbugs' acknowledgement to whoever closed the bug.
_MARKED_DONE = re.compile(r"marked as done \((?P<title>.*)\)", re.DOTALL)
#: ``Bug#N closed by <closer> (<subject of the closing mail>)``: the notice to the submitter.
_CLOSED_BY = re.compile(r"bug\s*#\s*(\d{1,9}) closed by ", re.IGNORECASE)
#: ``fixed in <source> <version>``: dak's closing mail (its subject is not the bug title).
_FIXED_IN = re.compile(r"fixed in (?P<source>\S+) (?P<version>\S+)", re.IGNORECASE)
_DONE_LINE = re.compile(r"^Done: (.+)$", re.MULTILINE)
_TRACKER = re.compile(r"^owner@bugs\.", re.IGNORECASE)
MAX_FIELD = 1000
DEFAULT_LINK = "https://bugs.debian.org/{bug}"


def is_bts_mail(message: EmailMessage) -> bool:
    """True for mail re-sent by debbugs (``X-Loop: owner@bugs.*`` or ``X-Debian-PR-Message``),
    and for its closing notices recognised by subject and sender alone."""
    for loop in mailparse.headers(message, "X-Loop"):
        if "owner@bugs." in loop.lower():
            return True
    if mailparse.header(message, "X-Debian-PR-Message") is not None:
        return True
    return _closing_notice(message) is not None


def _closing_notice(message: EmailMessage) -> tuple[str, int] | None:
    """(PR message type, bug) of a tracker's closing notice without ``X-Debian-PR-*`` headers."""
    subject = _header(message, "Subject") or ""
    found: tuple[str, int] | None = None
    closed = _closed_by(subject)
    if closed:
        found = ("they-closed", closed[0])
    else:
        match = _SUBJECT.match(subject)
        if match and _MARKED_DONE.fullmatch(match.group(2).strip()):
            found = ("closed", int(match.group(1)))
    if found is None or not _TRACKER.match(_address(_header(message, "From") or "")[1]):
        return None
    return found


def parse_bts_mail(message: EmailMessage, raw: bytes, link: str = DEFAULT_LINK) -> list[Event]:
    """One event for a bug mail; ``[]`` for BTS mail that is not about one bug.

    ``link`` is the configured bug page (``{bug}`` is replaced by the number).
    """
    pr_message = _header(message, "X-Debian-PR-Message")
    if pr_message is None:
        notice = _closing_notice(message)
        if notice is None:
            return []
        pr_message = f"{notice[0]} {notice[1]}"
    match = _PR_MESSAGE.match(pr_message)
    if match is None:
        raise ParseError(f"malformed X-Debian-PR-Message header: {pr_message[:80]!r}")
    kind, number = match.group(1).lower(), match.group(2)
    verb = MESSAGE_EVENTS.get(kind)
    if verb is None or number is None:
        return []
    bug = int(number)
    if bug <= 0:
        raise ParseError(f"X-Debian-PR-Message names bug {bug}")
    subject = _header(message, "Subject") or ""
    title: str | None = subject
    subject_match = _SUBJECT.match(subject)
    if subject_match and int(subject_match.group(1)) == bug:
        title = subject_match.group(2).strip()
    package = _header(message, "X-Debian-PR-Package") or ""
    source = _header(message, "X-Debian-PR-Source") or ""
    tags = (_header(message, "X-Debian-PR-Keywords") or "").split()
    sender = _format(_address(_header(message, "From") or ""))
    closer = None
    if verb == "close":
        title, closer = _close_meaning(message, bug, subject, title, sender)
    msgid = (_header(message, "Message-ID") or "").replace(" ", "")
    when = date_to_epoch(_header(message, "Date"))
    ident = (_closing_message_id(message, subject) if verb == "close" else None) \
        or msgid or hashlib.sha256(raw).hexdigest()
    body: dict[str, Any] = {
        "bug": bug,
        "type": kind,
        "package": package,
        "source": source,
        "title": title,
        "tags": tags,
        "from": closer if closer is not None else sender,
        "message_id": msgid,
        "link": link.replace("{bug}", str(bug)),
        "via": "mail",
    }
    if verb == "close":
        body["done"] = closer or ""
    return [Event(
        service="debbugs", object="bug", event=verb,
        facts=facts.of_mail(bug, verb),
        key=mail_key(bug, verb, ident),
        body=body, time=when,
        usernames=tuple(people_logins(body.get(f) for f in PEOPLE)),
        packages=tuple(bug_packages(package, source)),
    )]


def mail_key(bug: int, verb: str, ident: str) -> str:
    """Outbox key of a mail event: same message (any copy) -> same key."""
    digest = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"debbugs:mail:{bug}:{verb}:{digest}"


def _close_meaning(message: EmailMessage, bug: int, subject: str, title: str | None,
                   sender: str) -> tuple[str | None, str]:
    """(bug title or None, closer) of a closing mail, whichever of the three forms it is."""
    closed_by = _closed_by(subject)
    if closed_by and closed_by[0] == bug:
        closer = _format(_address(closed_by[1]))
        inner = closed_by[2].strip()
        inner_match = _SUBJECT.match(inner)
        if inner_match and int(inner_match.group(1)) == bug:
            inner = inner_match.group(2).strip()
        return (None if _FIXED_IN.fullmatch(inner) else inner or None), closer
    if title is not None:
        marked = _MARKED_DONE.fullmatch(title)
        if marked:  # the tracker's acknowledgement, sent To the closer
            recipients = getaddresses(mailparse.headers(message, "To"))
            closer = _format(recipients[0]) if recipients and recipients[0][1] else sender
            return marked.group("title").strip() or None, closer
        if _FIXED_IN.fullmatch(title):  # dak's closing mail, resent: Done: names the closer
            done = _DONE_LINE.search(mailparse.text_body(message)[:65536])
            closer = _format(_address(done.group(1))) if done else sender
            return None, closer
    return title, sender


def _closing_message_id(message: EmailMessage, subject: str) -> str | None:
    """The Message-Id of the mail that closed the bug, which the tracker's acknowledgement
    (``In-Reply-To``) and notice to the submitter (first of ``References``) point at, so
    the copy of the closing mail and both notices are one event."""
    if _closed_by(subject) is not None:
        references = (_header(message, "References") or "").split()
        return references[0] if references else None
    title = _SUBJECT.match(subject)
    if title and _MARKED_DONE.fullmatch(title.group(2).strip()):
        reply_to = (_header(message, "In-Reply-To") or "").split()
        return reply_to[0] if reply_to else None
    return None


def _closed_by(subject: str) -> tuple[int, str, str] | None:
    """(bug, closer, closing subject) of ``Bug#N closed by <closer> (<subject>)``.

    The subject may hold parentheses and so may the closer (``addr (Name)``): the
    last ``)`` is matched to its ``(`` by counting, in one pass.
    """
    head = _CLOSED_BY.match(subject)
    if head is None or not subject.endswith(")"):
        return None
    rest = subject[head.end():]
    depth = 0
    for index in range(len(rest) - 1, -1, -1):
        char = rest[index]
        if char == ")":
            depth += 1
        elif char == "(":
            depth -= 1
            if depth == 0:
                closer = rest[:index].strip()
                return (int(head.group(1)), closer, rest[index + 1:-1]) if closer else None
    return None


def _address(value: str) -> tuple[str, str]:
    """(name, address) from ``Name <addr>`` or ``addr (Name)``."""
    pairs = getaddresses([value])
    if not pairs or not pairs[0][1]:
        return "", value.strip()
    return pairs[0]


def _format(pair: tuple[str, str]) -> str:
    """``Name <address>`` (see :func:`mailparse.format_address`), capped."""
    return mailparse.format_address(*pair)[:MAX_FIELD]


def _header(message: EmailMessage, name: str) -> str | None:
    """A header decoded in linear time (``mailparse.header``), capped at :data:`MAX_FIELD`."""
    value = mailparse.header(message, name)
    return value[:MAX_FIELD] if value is not None else None
