"""The weekly overview ("This week in Fedora", for busgate): uploads, bugs opened and closed,
builds, pushes, each against the week before, and the most active packages and people.

Computed from the history's daily rollups (:meth:`HistoryStore.topic_counts`,
:meth:`~HistoryStore.top_names`), so a week costs the same at a thousand stored messages
as at a million. Weeks are ISO 8601 weeks in UTC (Monday 00:00:00 to the next Monday).

What counts as an upload, a bug or a push is :data:`KINDS`, one table keyed by the message
types' topic patterns: a source that adds a kind adds a row there.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.history.store import HistoryStore
    from gateway.messages import TypeIndex

#: Topic pattern (the tokens after ``org.<distribution>.<env>``, as the message types
#: declare them in ``topic_tokens``; ``"*"`` matches any one token) -> (kind, detail).
#: A kind counts the messages of all its rows; its details split that count. Kinds are
#: shown in the order of their first row. Every row counts one thing once:
#:
#: - uploads: dak's accepted uploads (an upload to NEW is counted when it is accepted);
#: - bugs opened: ``new`` (SOAP poller) and ``report`` (BTS mail) report a bug once
#:   between them, as ``close`` does (``dak.bug.close`` is the upload's claim, which the
#:   BTS then reports as ``debbugs.bug.close``: not counted twice);
#: - builds: wanna-build's results, ``Built`` and ``Build-Attempted`` (the buildd's failure;
#:   a later ``Failed`` is a person's verdict on a build already counted);
#: - pushes: ref updates from the git hook, whatever the deployment calls its git service
#:   (the type's own tokens are looked up, not the topic's).
KINDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("dak", "package", "accept"): ("uploads", "accepted"),
    ("debbugs", "bug", "new"): ("bugs_opened", "opened"),
    ("debbugs", "bug", "report"): ("bugs_opened", "opened"),
    ("debbugs", "bug", "close"): ("bugs_closed", "closed"),
    ("wanna-build", "build", "built"): ("builds", "built"),
    ("wanna-build", "build", "build-attempted"): ("builds", "failed"),
    ("git", "branch", "create"): ("pushes", "branches"),
    ("git", "branch", "update"): ("pushes", "branches"),
    ("git", "branch", "delete"): ("pushes", "branches"),
    ("git", "tag", "create"): ("pushes", "tags"),
    ("git", "tag", "update"): ("pushes", "tags"),
    ("git", "tag", "delete"): ("pushes", "tags"),
}
#: Tokens before a topic's own: ``org.<distribution>.<env>``.
PREFIX_TOKENS = 3
#: The top lists' length, and the most anyone may ask for (``--top``, ``?top=``).
DEFAULT_TOP = 10
MAX_TOP = 100
#: The first week an overview is made for (the epoch's); later than this week is refused.
FIRST_YEAR = 1970

_WEEK = re.compile(r"(\d{4})-W(\d{2})")
WEEK_FORMAT = "YYYY-Www, e.g. 2026-W48"


class BadWeek(ValueError):
    """A week that cannot be read or has no overview (the reason is the message)."""


@dataclass(frozen=True, order=True)
class Week:
    """One ISO week (UTC)."""

    year: int
    number: int

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.combine(dt.date.fromisocalendar(self.year, self.number, 1),
                                   dt.time(), dt.UTC)

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(days=7)

    def previous(self) -> Week:
        return week_of(self.start - dt.timedelta(days=7))

    def following(self) -> Week:
        return week_of(self.end)

    def __str__(self) -> str:
        return f"{self.year:04d}-W{self.number:02d}"


def week_of(moment: dt.datetime) -> Week:
    year, number, _ = moment.astimezone(dt.UTC).isocalendar()
    return Week(year, number)


def last_complete_week(now: dt.datetime | None = None) -> Week:
    """The week before the one ``now`` (default: the current time) is in."""
    return week_of(now or dt.datetime.now(dt.UTC)).previous()


def parse_week(text: str, now: dt.datetime | None = None) -> Week:
    """``2026-W48`` as a :class:`Week`; :class:`BadWeek` for anything else, for a week
    that does not exist (``2025-W53``), before :data:`FIRST_YEAR` or after the current one."""
    match = _WEEK.fullmatch(text.strip()) if len(text) <= 20 else None
    if match is None:
        raise BadWeek(f"{text[:40]!r} is not an ISO week ({WEEK_FORMAT})")
    year, number = int(match.group(1)), int(match.group(2))
    try:
        dt.date.fromisocalendar(year, number, 1)
    except ValueError:
        raise BadWeek(f"{year} has no week {number}") from None
    week = Week(year, number)
    if year < FIRST_YEAR:
        raise BadWeek(f"{week} is before {FIRST_YEAR}")
    current = week_of(now or dt.datetime.now(dt.UTC))
    if week > current:
        raise BadWeek(f"{week} is in the future (this week is {current})")
    return week


def kind_of(topic: str, index: TypeIndex | None = None) -> tuple[str, str] | None:
    """(kind, detail) of a topic, or None when it counts towards no kind.

    The message type's own tokens are used when ``index`` knows the topic, so a
    deployment's renamed service (``git.service``) still counts as pushes."""
    tokens = tuple(topic.split(".")[PREFIX_TOKENS:])
    if index is not None:
        declared = index.lookup(tokens).topic_tokens
        if len(declared) == len(tokens):
            tokens = tuple(t if d == "*" else d for d, t in zip(declared, tokens, strict=True))
    found = KINDS.get(tokens)
    if found is not None:
        return found
    for pattern, kind in KINDS.items():
        if "*" in pattern and len(pattern) == len(tokens) and all(
                p in ("*", t) for p, t in zip(pattern, tokens, strict=True)):
            return kind
    return None


def kind_label(kind: str) -> str:
    return kind.replace("_", " ")


@dataclass
class Count:
    """One figure of the week and of the week before."""

    count: int = 0
    previous: int = 0

    @property
    def change(self) -> int:
        return self.count - self.previous

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "previous": self.previous, "change": self.change}


@dataclass
class Kind(Count):
    name: str = ""
    details: dict[str, Count] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.name, **super().as_json(),
                "details": {name: c.as_json() for name, c in self.details.items()}}


@dataclass
class Overview:
    week: Week
    #: False for the current week (still filling).
    complete: bool
    kinds: list[Kind]
    messages: Count
    packages: list[tuple[str, int]]
    users: list[tuple[str, int]]

    def as_json(self) -> dict[str, Any]:
        return {
            "week": str(self.week), "previous_week": str(self.week.previous()),
            "start": self.week.start.isoformat(), "end": self.week.end.isoformat(),
            "complete": self.complete,
            "kinds": [k.as_json() for k in self.kinds],
            "messages": self.messages.as_json(),
            "packages": [{"name": n, "count": c} for n, c in self.packages],
            "users": [{"name": n, "count": c} for n, c in self.users],
        }


def overview(store: HistoryStore, week: Week, *, index: TypeIndex | None = None,
             top: int = DEFAULT_TOP, now: dt.datetime | None = None) -> Overview:
    """The overview of ``week`` (counts against the week before) from ``store``."""
    if not 1 <= top <= MAX_TOP:
        raise ValueError(f"top must be 1..{MAX_TOP}, not {top}")
    kinds: dict[str, Kind] = {}
    for name, detail in KINDS.values():  # every kind and detail, in table order, even at 0
        kinds.setdefault(name, Kind(name=name)).details.setdefault(detail, Count())
    messages = Count()
    for attribute, each in (("count", week), ("previous", week.previous())):
        start, end = each.start.timestamp(), each.end.timestamp()
        for topic, n in store.topic_counts(start, end).items():
            setattr(messages, attribute, getattr(messages, attribute) + n)
            found = kind_of(topic, index)
            if found is None:
                continue
            kind = kinds[found[0]]
            detail = kind.details.setdefault(found[1], Count())
            setattr(kind, attribute, getattr(kind, attribute) + n)
            setattr(detail, attribute, getattr(detail, attribute) + n)
    start, end = week.start.timestamp(), week.end.timestamp()
    moment = now or dt.datetime.now(dt.UTC)
    return Overview(week=week, complete=moment >= week.end, kinds=list(kinds.values()),
                    messages=messages,
                    packages=store.top_names("packages", start, end, top),
                    users=store.top_names("users", start, end, top))
