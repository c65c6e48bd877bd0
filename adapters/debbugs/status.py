"""Bug status snapshots and their differences, as events (pure translation).

A ``get_status`` map is reduced to the fields people act on (the snapshot kept
in the state DB); comparing two snapshots of one bug gives its events:
``close``/``reopen`` when ``done`` turns set/empty, ``archive`` when it is
archived, otherwise ``update``; each carries ``changes``: field -> [old, new].
Fields that move without anyone acting (``last_modified``, ``pending``,
``location``) are kept for keys and times but never reported as changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from adapters.debbugs.messages import PEOPLE, bug_packages, people_logins
from adapters.mailparse import display_address
from gateway.event import Event

#: Snapshot fields reported in ``changes`` when they differ (in this order).
COMPARED = ("title", "severity", "tags", "package", "source", "submitter", "owner",
            "forwarded", "done", "archived", "mergedwith", "blocks", "blockedby", "affects",
            "found_versions", "fixed_versions")
#: Body fields every poller event carries.
SUMMARY = ("bug", "package", "source", "title", "severity", "tags", "submitter", "owner",
           "forwarded", "done", "archived")


def snapshot(bug: int, status: Mapping[str, Any]) -> dict[str, Any]:
    """The kept form of one bug's ``get_status`` map (JSON-able, order-independent)."""
    tags = _words(status.get("tags")) or _words(status.get("keywords"))
    return {
        "bug": bug,
        "package": _text(status.get("package")),
        "source": _text(status.get("source")),
        "title": _text(status.get("subject")),
        "severity": _text(status.get("severity")) or "normal",
        "tags": sorted(set(tags)),
        "submitter": _text(status.get("originator")),
        "owner": _text(status.get("owner")),
        "forwarded": _text(status.get("forwarded")),
        "done": _text(status.get("done")),
        "archived": _truthy(status.get("archived")),
        "mergedwith": _numbers(status.get("mergedwith")),
        "blocks": _numbers(status.get("blocks")),
        "blockedby": _numbers(status.get("blockedby")),
        "affects": sorted({a.strip() for a in _text(status.get("affects")).split(",")
                           if a.strip()}),
        "found_versions": _versions(status.get("found_versions")),
        "fixed_versions": _versions(status.get("fixed_versions")),
        "date": _int(status.get("date")),
        "last_modified": _int(status.get("last_modified")),
    }


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[Any]]:
    return {f: [old.get(f), new.get(f)] for f in COMPARED if old.get(f) != new.get(f)}


def new_event(snap: Mapping[str, Any], link: str) -> Event:
    """``debbugs.bug.new`` for a bug seen for the first time."""
    return _event("new", snap, link, key=f"debbugs:{snap['bug']}:new", extra={})


def diff_events(old: Mapping[str, Any], new: Mapping[str, Any], link: str) -> list[Event]:
    """The events that turn snapshot ``old`` into ``new`` (``[]`` when nothing reportable)."""
    delta = changes(old, new)
    if not delta:
        return []
    verbs = []
    if "done" in delta:
        verbs.append("close" if new["done"] else "reopen")
    if "archived" in delta and new["archived"]:
        verbs.append("archive")
    if not verbs:
        verbs.append("update")
    digest = hashlib.sha256(json.dumps(delta, sort_keys=True).encode()).hexdigest()[:16]
    stamp = new.get("last_modified") or 0
    return [_event(verb, new, link, key=f"debbugs:{new['bug']}:{verb}:{stamp}:{digest}",
                   extra={"changes": delta}) for verb in verbs]


def _event(verb: str, snap: Mapping[str, Any], link: str, *, key: str,
           extra: dict[str, Any]) -> Event:
    body: dict[str, Any] = {f: snap.get(f) for f in SUMMARY}
    for person in ("submitter", "owner", "done"):  # as mail events write them: Name <address>
        body[person] = display_address(body[person] or "")
    body["link"] = link.replace("{bug}", str(snap["bug"]))
    body["via"] = "soap"
    body.update(extra)
    when = snap.get("last_modified") if verb != "new" else snap.get("date")
    return Event(service="debbugs", object="bug", event=verb, key=key, body=body,
                 usernames=tuple(people_logins(body.get(f) for f in PEOPLE)),
                 packages=tuple(bug_packages(body["package"], body["source"])),
                 time=float(when) if when else None)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(_text(v) for v in value).strip()
    if isinstance(value, dict):
        return ""
    return str(value).strip()


def _words(value: Any) -> list[str]:
    return _text(value).split()


def _numbers(value: Any) -> list[int]:
    return sorted({int(w) for w in _words(value) if w.isdigit()})


def _versions(value: Any) -> list[str]:
    if isinstance(value, list):
        return sorted({_text(v) for v in value if _text(v)})
    return sorted(set(_words(value)))


def _truthy(value: Any) -> bool:
    """Perl truthiness, as debbugs means it: "", "0", 0 and undef are false."""
    return _text(value) not in ("", "0")


def _int(value: Any) -> int | None:
    try:
        return int(_text(value)) if _text(value) else None
    except ValueError:
        return None
