"""One ``transactions`` row (with its ``packages`` row, if any) -> one Event.

Pure translation, no SQL. The ``transactions`` row says what changed (action,
previous and new state, who, when); the ``packages`` row adds what only it holds
(builder, failure text, binNMU version, notes, dep-wait list). ``packages`` holds
the *current* state, so those fields are copied only while that row still shows
this transaction's version and state (``package_row: current``); after a later
change they would describe another event (``changed``), and a deleted source has
none (``gone``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from adapters.wannabuild import states
from gateway.event import Event

SERVICE = "wanna-build"
OBJECT = "build"
#: Longest value copied for any text field other than the failure text.
MAX_FIELD_CHARS = 1000
#: Keys longer than this are replaced by a digest (hostile or absurd rows stay storable).
MAX_KEY_CHARS = 500
#: The build status page put in each body's ``link``; ``{package}`` and ``{distribution}``
#: are replaced by the URL-quoted values. A body carries its link because a message type
#: sees only the body, and a deployment other than Debian's (ports) has its own page.
DEFAULT_LINK = "https://buildd.debian.org/status/package.php?p={package}&suite={distribution}"


@dataclass(frozen=True, slots=True)
class Row:
    """A ``transactions`` row joined with the ``packages`` row of the same build."""

    architecture: Any
    package: Any
    distribution: Any
    version: Any
    action: Any
    prevstate: Any
    state: Any
    real_user: Any
    set_user: Any
    #: ``transactions.time`` as stored (naive, the database's local time); None when
    #: Python cannot hold it (NULL, ``infinity``, beyond year 9999): a poison row.
    time: dt.datetime | None
    #: The same instant as epoch seconds (computed by the database in its time zone).
    epoch: float | None = None
    #: Whether a ``packages`` row exists for (architecture, package, distribution).
    pkg_present: bool = False
    pkg_version: Any = None
    pkg_state: Any = None
    builder: Any = None
    failed: Any = None
    binary_nmu_version: Any = None
    notes: Any = None
    depends: Any = None
    #: ``transactions.time`` as the database prints it (for poison rows).
    time_text: Any = None
    #: ``ctid``: where the row sits in the table, i.e. the order it was written in.
    position: Any = None


def text(value: Any) -> str | None:
    """Database text as ``str``: bytes (SQL_ASCII databases) decode as UTF-8, bad bytes as \\xNN."""
    if value is None or value.__class__ is str:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def event_key(row: Row) -> str:
    """What identifies this row at its source (``transactions`` has no id): all its columns."""
    fields = [text(row.architecture), text(row.distribution), text(row.package),
              text(row.version), row.time.isoformat(), text(row.action), text(row.prevstate),
              text(row.state), text(row.set_user), text(row.real_user)]
    key = "wanna-build:" + json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    if len(key) > MAX_KEY_CHARS:
        key = "wanna-build:sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def describe_row(row: Row) -> dict[str, Any]:
    """The ``transactions`` columns of a row as plain text (what quarantine keeps)."""
    return {"architecture": text(row.architecture), "package": text(row.package),
            "distribution": text(row.distribution), "version": text(row.version),
            "action": text(row.action), "prevstate": text(row.prevstate),
            "state": text(row.state), "real_user": text(row.real_user),
            "set_user": text(row.set_user), "time": text(row.time_text),
            "ctid": text(row.position)}


def poison_key(row: Row) -> str:
    """Identity of a row that cannot become an event (its columns, time as printed)."""
    fields = json.dumps(describe_row(row) | {"ctid": None}, ensure_ascii=False, sort_keys=True)
    return "wanna-build:poison:" + hashlib.sha256(fields.encode()).hexdigest()


@functools.lru_cache(maxsize=4096)  # a backlog repeats the same packages and suites
def build_link(template: str, package: str | None, distribution: str | None) -> str | None:
    """The status page of ``package`` in ``distribution`` (None when either is unknown, or
    no page is configured)."""
    if not template or not package or not distribution:
        return None
    return template.replace("{package}", quote(package, safe="")) \
        .replace("{distribution}", quote(distribution, safe=""))


def to_event(row: Row, *, max_failure_chars: int = 4000, link: str = DEFAULT_LINK) -> Event:
    if row.time is None:
        raise ValueError(f"transactions.time {text(row.time_text) or 'NULL'} is not a "
                         "time busgate can publish (NULL, infinity or beyond year 9999)")
    truncated: list[str] = []

    def bounded(name: str, value: Any, limit: int = MAX_FIELD_CHARS) -> str | None:
        value = text(value)
        if value is not None and len(value) > limit:
            truncated.append(name)
            return value[:limit]
        return value

    state = text(row.state)
    prevstate = text(row.prevstate)
    version = text(row.version)
    if not row.pkg_present:
        package_row = "gone"
    elif text(row.pkg_version) == version and text(row.pkg_state) == state:
        package_row = "current"
    else:
        package_row = "changed"
    current = package_row == "current"
    when = (dt.datetime.fromtimestamp(row.epoch, dt.UTC).isoformat()
            if row.epoch is not None else row.time.isoformat())
    nmu = row.binary_nmu_version if current and isinstance(row.binary_nmu_version, int) else None
    body: dict[str, Any] = {
        "architecture": bounded("architecture", row.architecture),
        "distribution": bounded("distribution", row.distribution),
        "package": bounded("package", row.package),
        "version": bounded("version", version),
        "previous_state": None if prevstate == states.NO_STATE
        else bounded("previous_state", prevstate),
        "state": bounded("state", state),
        "action": bounded("action", row.action),
        "user": bounded("user", row.set_user),
        "real_user": bounded("real_user", row.real_user),
        "time": when,
        "package_row": package_row,
        "builder": bounded("builder", row.builder) if current else None,
        "failed": bounded("failed", row.failed, max_failure_chars) if current else None,
        "binary_nmu_version": nmu,
        "notes": bounded("notes", row.notes) if current else None,
        "depends": bounded("depends", row.depends) if current else None,
        "truncated": truncated,
    }
    body["link"] = build_link(link, body["package"], body["distribution"])
    users = tuple(dict.fromkeys(u for u in (body["user"], body["real_user"]) if u))
    return Event(
        service=SERVICE,
        object=OBJECT,
        event=states.slug(state),
        key=event_key(row),
        body=body,
        usernames=users,
        packages=(body["package"],) if body["package"] else (),
        time=row.epoch,
    )
