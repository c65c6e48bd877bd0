"""Which dak mail is this? Subject forms, machine headers, and whether the sender is dak.

One table of subject patterns covers twenty years of templates: the modern
``Accepted <src> <ver> (<arch>) into <suite>`` announcement, its pre-2014 form
without a suite, the katie-era ``Installed``, the uploader mails
(``ACCEPTED``/``INSTALLED into``, ``is NEW``, ``REJECTED``), ftp-master's
``Comments regarding``, bug closures, removals and the upload queue's
``Processing of``. The ``Debian-Archive-Action`` header (dak since 2022) names
the action directly and wins when present; a subject that contradicts it is an
error, not a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from adapters import mailparse
from gateway.errors import ParseError

SUBJECTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("announce", re.compile(
        r"Accepted (?P<source>\S+) (?P<version>\S+) \((?P<arch>[^()]*)\)(?: into (?P<suite>.+))?")),
    ("installed-announce", re.compile(
        r"(?:Installed|INSTALLED) (?P<source>\S+) (?P<version>\S+) \((?P<arch>[^()]*)\)")),
    ("accepted", re.compile(r"(?P<file>\S+\.changes) ACCEPTED into (?P<suite>.+)")),
    ("installed", re.compile(r"(?P<file>\S+\.changes) INSTALLED into (?P<suite>.+)")),
    ("new", re.compile(r"(?P<file>\S+\.changes) is NEW")),
    ("rejected", re.compile(r"(?P<file>\S+\.changes) REJECTED")),
    ("prod", re.compile(r"Comments regarding (?P<file>\S+\.changes)")),
    ("bug-close", re.compile(r"Bug#(?P<bug>\d{1,9}): fixed in (?P<source>\S+) (?P<version>\S+)")),
    ("rm", re.compile(r"Bug#(?P<bug>\d{1,9}): Removed package\(s\) from (?P<suites>.+)")),
    ("queue", re.compile(r"Processing of (?P<file>\S+)")),
)

#: Mail kind -> the Debian-Archive-Action values it may carry.
ACTIONS = {
    "announce": {"accept"},
    "accepted": {"accept", "policy"},
    "bug-close": {"accept"},
    "new": {"new"},
    "rejected": {"reject"},
    "rm": {"remove"},
}
#: Debian-Archive-Action -> the mail kind assumed when the subject says nothing known.
ACTION_KIND = {"accept": "accepted", "policy": "accepted", "new": "new", "reject": "rejected",
               "remove": "rm"}
#: Kinds that a mail without any dak header may still be (archived list announcements).
HEADERLESS = {"announce", "installed-announce"}


@dataclass(frozen=True)
class Classified:
    kind: str
    fields: dict[str, str]
    action: str | None
    from_dak: bool


def single(message: Message, name: str) -> str | None:
    """A header that must not appear twice with different values (header smuggling)."""
    values = mailparse.headers(message, name)
    if not values:
        return None
    if len(set(values)) > 1:
        raise ParseError(f"conflicting duplicate {name} headers")
    return values[0]


def is_from_dak(message: Message) -> bool:
    """dak's markers: ``X-Debian: DAK``, ``Debian: DAK``, ``X-DAK``, ``Debian-Archive-Action``."""
    for name in ("X-Debian", "Debian"):
        if any("dak" in v.lower().split() for v in mailparse.headers(message, name)):
            return True
    return bool(mailparse.headers(message, "X-DAK")
                or mailparse.headers(message, "Debian-Archive-Action"))


def classify(message: Message) -> Classified | None:
    """The dak mail kind and the subject's fields, or None for a mail that is not dak's."""
    subject = single(message, "Subject") or ""
    action = single(message, "Debian-Archive-Action")
    action = action.lower() if action else None
    from_dak = is_from_dak(message)
    kind, fields = _match_subject(subject)
    if action is not None:
        if action not in ACTION_KIND:
            raise ParseError(f"unknown Debian-Archive-Action {action!r}")
        if kind is None:
            kind, fields = ACTION_KIND[action], {}
        elif kind in ACTIONS and action not in ACTIONS[kind]:
            raise ParseError(
                f"Debian-Archive-Action {action!r} contradicts the subject {subject[:120]!r}")
    if kind is None:
        return None
    if not from_dak and kind not in HEADERLESS:
        return None
    return Classified(kind, fields, action, from_dak)


def _match_subject(subject: str) -> tuple[str | None, dict[str, str]]:
    for kind, pattern in SUBJECTS:
        match = pattern.fullmatch(subject)
        if match:
            return kind, {k: v for k, v in match.groupdict().items() if v is not None}
    return None, {}
