"""Real-time bug events from the mail the bug tracker re-sends.

debbugs re-sends every processed message with ``X-Loop: owner@bugs...`` and
``X-Debian-PR-Message: <type> <bug>``; that header says what happened
(``report`` = a new bug, ``closed`` = mail to ``-done``...). Each such mail
becomes one ``debbugs.bug.<event>`` event right away; the poller later sees the
same change in ``get_status`` and stays silent about it (see ``dedup``).

The key is built from the bug, the event and the original Message-Id, so the
copies of one message the BTS sends to several lists are stored once.
"""

from __future__ import annotations

import hashlib
import re
from email.message import EmailMessage
from typing import Any

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
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9+.-]*")
_OWNER = re.compile(r"owner@(bugs\.[a-z0-9.-]+[a-z0-9])", re.IGNORECASE)
MAX_FIELD = 1000
DEFAULT_HOST = "bugs.debian.org"


def is_bts_mail(message: EmailMessage) -> bool:
    """True for mail re-sent by debbugs (``X-Loop: owner@bugs.*`` or ``X-Debian-PR-Message``)."""
    for loop in message.get_all("X-Loop", []) or []:
        if "owner@bugs." in str(loop).lower():
            return True
    return message.get("X-Debian-PR-Message") is not None


def parse_bts_mail(message: EmailMessage, raw: bytes) -> list[Event]:
    """One event for a bug mail; ``[]`` for BTS mail that is not about one bug."""
    pr_message = _header(message, "X-Debian-PR-Message")
    if pr_message is None:
        return []
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
    title = subject
    subject_match = _SUBJECT.match(subject)
    if subject_match and int(subject_match.group(1)) == bug:
        title = subject_match.group(2).strip()
    package = _header(message, "X-Debian-PR-Package") or ""
    source = _header(message, "X-Debian-PR-Source") or ""
    tags = (_header(message, "X-Debian-PR-Keywords") or "").split()
    sender = _header(message, "From") or ""
    msgid = (_header(message, "Message-ID") or "").replace(" ", "")
    when = date_to_epoch(_header(message, "Date"))
    ident = msgid or hashlib.sha256(raw).hexdigest()
    body: dict[str, Any] = {
        "bug": bug,
        "type": kind,
        "package": package,
        "source": source,
        "title": title,
        "tags": tags,
        "from": sender,
        "message_id": msgid,
        "link": f"https://{_bts_host(message)}/{bug}",
        "via": "mail",
    }
    packages = tuple(dict.fromkeys(p for p in (*package.split(), *source.split())
                                   if _TOKEN.fullmatch(p)))
    return [Event(
        service="debbugs", object="bug", event=verb,
        key=mail_key(bug, verb, ident),
        body=body, packages=packages, time=when,
    )]


def mail_key(bug: int, verb: str, ident: str) -> str:
    """Outbox key of a mail event: same message (any copy) -> same key."""
    digest = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"debbugs:mail:{bug}:{verb}:{digest}"


def _bts_host(message: EmailMessage) -> str:
    """``bugs.debian.org`` from ``X-Loop: owner@bugs.debian.org`` (the instance that sent it)."""
    for loop in message.get_all("X-Loop", []) or []:
        match = _OWNER.search(str(loop))
        if match:
            return match.group(1).lower()
    return DEFAULT_HOST


def _header(message: EmailMessage, name: str) -> str | None:
    try:
        value = message.get(name)
    except (ValueError, LookupError, TypeError):
        return None
    if value is None:
        return None
    text = _CONTROL.sub(" ", str(value)).strip()
    return re.sub(r"\s{2,}", " ", text)[:MAX_FIELD]
