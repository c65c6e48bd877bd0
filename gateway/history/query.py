"""datagrepper's ``/raw`` parameters, read strictly: a :class:`Query`, or a
:class:`BadParameter` naming the parameter and the reason (a 400, never a 500).

Same names, defaults and meaning as datagrepper 1.1 (start, end, delta, user, package,
category, topic, contains and their ``not_*`` forms, page, rows_per_page, order, meta,
size, chrome, callback), without its faults:

* ``end`` alone bounds the search above (datagrepper drops it and filters nothing;
  busgate, like datagrepper's default, has no implicit time window);
* ``rows_per_page`` is 1..100 (0 is refused, not "every row"); ``page`` is at most
  ``history.max_page`` and deeper paging follows ``cursor`` (keyset on time and
  insertion order: stable while new messages arrive);
* ``contains`` matches any substring of 3 or more characters, non-ASCII included,
  case-insensitively (an FTS5 trigram index; datagrepper's LIKE on ASCII-escaped JSON
  never finds non-ASCII), with no "needs a topic and a start within 32 weeks" rule;
* an unknown parameter, a repeated single one, or an unknown ``meta``/``size`` value is a
  400 (datagrepper ignores the first two and fails with 500 on the others).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: datagrepper's ``rows_per_page`` default and maximum.
DEFAULT_ROWS = 25
MAX_ROWS = 100
#: Longest value of a name parameter (a topic is at most 255 bytes on AMQP).
MAX_VALUE_CHARS = 255
#: Shortest ``contains`` term: the trigram index finds nothing shorter.
MIN_CONTAINS_CHARS = 3
#: datagrepper's ``meta`` values, and its legacy aliases.
META = ("summary", "text", "url", "app_icon", "agent_avatar", "usernames", "packages",
        "containers", "modules", "flatpaks", "date")
LEGACY_META = {"subtitle": "summary", "link": "url", "icon": "app_icon"}
SIZES = ("small", "medium", "large", "extra-large")
#: A JSONP callback must be a plain (dotted) JavaScript name.
CALLBACK = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(\.[A-Za-z_$][A-Za-z0-9_$]*){0,7}")
_LISTS = {"user": "users", "package": "packages", "category": "categories",
          "topic": "topics", "contains": "contains"}
_SINGLE = ("start", "end", "delta", "page", "rows_per_page", "order", "size", "chrome",
           "callback", "cursor")
#: jQuery's cache buster, sent by browsers' scripts: allowed and ignored.
_IGNORED = ("_",)


class BadParameter(ValueError):
    """A parameter datagrepper's API does not accept (HTTP 400)."""

    def __init__(self, parameter: str, reason: str):
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


@dataclass(frozen=True)
class Query:
    start: float | None = None
    end: float | None = None
    delta: float | None = None
    users: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()
    not_users: tuple[str, ...] = ()
    not_packages: tuple[str, ...] = ()
    not_categories: tuple[str, ...] = ()
    not_topics: tuple[str, ...] = ()
    page: int = 1
    rows_per_page: int = DEFAULT_ROWS
    order: str = "desc"
    meta: tuple[str, ...] = ()
    size: str = "large"
    chrome: bool = True
    callback: str | None = None
    #: Keyset position (timestamp, id) to continue after, from a previous answer.
    cursor: tuple[float, int] | None = field(default=None)

    def arguments(self) -> dict[str, Any]:
        """datagrepper's ``arguments`` echo (its plural internal names)."""
        return {"start": self.start, "end": self.end, "delta": self.delta,
                "users": list(self.users), "packages": list(self.packages),
                "categories": list(self.categories), "topics": list(self.topics),
                "contains": list(self.contains), "not_users": list(self.not_users),
                "not_packages": list(self.not_packages),
                "not_categories": list(self.not_categories),
                "not_topics": list(self.not_topics), "page": self.page,
                "rows_per_page": self.rows_per_page, "order": self.order,
                "meta": list(self.meta)}


def parse(items: Iterable[tuple[str, str]], *, max_page: int = 100, max_values: int = 50,
          now: float | None = None) -> Query:
    """The :class:`Query` of ``/raw``'s query string ``items`` (name, value pairs)."""
    values: dict[str, list[str]] = {}
    for name, value in items:
        values.setdefault(name, []).append(value)
    for name, given in values.items():
        base = name[4:] if name.startswith("not_") else name
        if name in _IGNORED:
            continue
        if base not in _LISTS and name != "meta" and name not in _SINGLE:
            valid = sorted([*_LISTS, *(f"not_{n}" for n in _LISTS if n != "contains"),
                            "meta", *_SINGLE])
            raise BadParameter(name, f"unknown parameter (valid: {', '.join(valid)})")
        if name == "not_contains":
            raise BadParameter(name, "unknown parameter (datagrepper has no not_contains)")
        if name in _SINGLE and len(given) > 1:
            raise BadParameter(name, "given more than once")
        if len(given) > max_values:
            raise BadParameter(name, f"more than {max_values} values (history.max_values)")
    one = {name: given[0] for name, given in values.items() if name in _SINGLE}
    kw: dict[str, Any] = {}
    for base, plural in _LISTS.items():
        kw[plural] = _names(base, values.get(base, []))
        if base != "contains":
            kw[f"not_{plural}"] = _names(f"not_{base}", values.get(f"not_{base}", []))
    for term in kw["contains"]:
        if len(term) < MIN_CONTAINS_CHARS:
            raise BadParameter("contains", f"{term!r} is shorter than {MIN_CONTAINS_CHARS} "
                                           "characters (the text index finds nothing shorter)")
    kw.update(_timerange(one, time.time() if now is None else now))
    kw["page"] = _int(one, "page", 1, 1, max_page,
                      f"deeper pages: follow the answer's cursor (history.max_page is "
                      f"{max_page})")
    kw["rows_per_page"] = _int(one, "rows_per_page", DEFAULT_ROWS, 1, MAX_ROWS)
    order = one.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadParameter("order", f"must be asc or desc, not {order!r}")
    kw["order"] = order
    meta = []
    for value in values.get("meta", []):
        value = LEGACY_META.get(value, value)
        if value not in META:
            raise BadParameter("meta", f"unknown value {value!r} (valid: {', '.join(META)})")
        if value not in meta:
            meta.append(value)
    kw["meta"] = tuple(meta)
    size = one.get("size", "large")
    if size not in SIZES:
        raise BadParameter("size", f"must be one of {', '.join(SIZES)}, not {size!r}")
    kw["size"] = size
    kw["chrome"] = _bool(one, "chrome", True)
    callback = one.get("callback")
    if callback is not None and not CALLBACK.fullmatch(callback):
        raise BadParameter("callback", "must be a JavaScript name (letters, digits, _ $ .)")
    kw["callback"] = callback
    if "cursor" in one:
        if "page" in one and kw["page"] != 1:
            raise BadParameter("cursor", "cannot be combined with page")
        kw["cursor"] = decode_cursor(one["cursor"], order)
    return Query(**kw)


def _names(name: str, given: list[str]) -> tuple[str, ...]:
    for value in given:
        if not value:
            raise BadParameter(name, "empty value")
        if len(value) > MAX_VALUE_CHARS:
            raise BadParameter(name, f"longer than {MAX_VALUE_CHARS} characters")
        if any(ord(c) < 32 for c in value):
            raise BadParameter(name, "contains a control character")
    return tuple(dict.fromkeys(given))


def _int(one: dict[str, str], name: str, default: int, low: int, high: int,
         hint: str = "") -> int:
    if name not in one:
        return default
    text = one[name]
    if not re.fullmatch(r"[0-9]{1,9}", text.strip()):
        raise BadParameter(name, f"must be a whole number, not {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise BadParameter(name, f"must be {low}-{high}, not {value}" + (f"; {hint}"
                                                                         if value > high and hint
                                                                         else ""))
    return value


def _bool(one: dict[str, str], name: str, default: bool) -> bool:
    text = one.get(name)
    if text is None:
        return default
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise BadParameter(name, f"must be true or false, not {text!r}")


def when(name: str, text: str) -> float:
    """Epoch seconds from a number or an ISO 8601 date/time (naive = UTC)."""
    try:
        value = float(text)
    except ValueError:
        try:
            stamp = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise BadParameter(name, f"must be epoch seconds or an ISO 8601 time, not "
                                     f"{text[:64]!r}") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        return stamp.timestamp()
    if not math.isfinite(value):
        raise BadParameter(name, "must be a finite number")
    return value


def _timerange(one: dict[str, str], now: float) -> dict[str, float | None]:
    """datagrepper's ``assemble_timerange``, with ``end`` alone meaning "up to end"."""
    start = when("start", one["start"]) if "start" in one else None
    end = when("end", one["end"]) if "end" in one else None
    delta = None
    if "delta" in one:
        delta = when("delta", one["delta"])
        if delta <= 0:
            raise BadParameter("delta", f"must be more than 0 seconds, not {one['delta']!r}")
    if start is not None and end is not None:
        delta = end - start
    elif start is not None and delta is not None:
        end = start + delta
    elif end is not None and delta is not None:
        start = end - delta
    elif start is not None:
        end = now
        delta = end - start
    elif delta is not None:
        start, end = now - delta, now
    if start is not None and end is not None and start > end:
        raise BadParameter("start", "is after end")
    return {"start": start, "end": end, "delta": delta}


def encode_cursor(order: str, timestamp: float, row_id: int) -> str:
    """The opaque ``cursor`` continuing after a row (bound to the sort order)."""
    text = f"{order}:{timestamp!r}:{row_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(text: str, order: str) -> tuple[float, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        kind, stamp, row_id = raw.split(":")
        value = (float(stamp), int(row_id))
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("cursor", "not a cursor this server gave") from None
    if kind != order:
        raise BadParameter("cursor", f"was given for order={kind}, not order={order}")
    return value
