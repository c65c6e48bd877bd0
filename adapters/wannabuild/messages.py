"""The message type of ``wanna-build.build.<state>``: one family for every state.

A wanna-build state change is one ``transactions`` row; the topic's last token is
the new state slugged (``states.slug``), and any state wanna-build may grow still
gets a token, so one type matches them all (``("wanna-build", "build", "*")``).
The summary reads like the buildd status pages: ``hebcal 4.31-1 built on amd64
(sid)``; the link is the body's ``link`` (the build status page, made at
translate time from its configured pattern). Failures a person should look at
(``Failed``, ``Build-Attempted``) are WARNING, everything else INFO.

``usernames`` are the row's ``user`` and ``real_user`` (wanna-build logins such
as ``buildd_amd64-x86-01``), ``packages`` its source package, exactly what
``translate.to_event`` puts into ``Event.usernames``/``packages``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.wannabuild import states
from gateway.messages import INFO, WARNING, Message, clip, counts_as

#: States (slugged) whose events are WARNING: a build failed and waits for a person.
FAILED_STATES = frozenset({"failed", "build-attempted"})
#: Longest text field of a body (``translate.MAX_FIELD_CHARS``).
MAX_FIELD_CHARS = 1000
#: Fields that can be cut to their limit (listed in ``truncated``).
TRUNCATABLE = ["architecture", "distribution", "package", "version", "previous_state", "state",
               "action", "user", "real_user", "builder", "failed", "notes", "depends"]
#: What a summary says after ``<package> <version>`` for a state, by slug; ``{arch}`` is
#: ``<architecture> (<distribution>)``.
PHRASES = {
    "needs-build": "needs a build on {arch}",
    "building": "building on {arch}",
    "built": "built on {arch}",
    "build-attempted": "build attempted on {arch}, failed",
    "uploaded": "uploaded on {arch}",
    "installed": "installed on {arch}",
    "dep-wait": "waiting for build-dependencies on {arch}",
    "dep-wait-removed": "removed from {arch} while waiting for build-dependencies",
    "bd-uninstallable": "has uninstallable build-dependencies on {arch}",
    "failed": "failed to build on {arch}",
    "failed-removed": "removed from {arch} after failing to build",
    "not-for-us": "is not for {arch}",
    "auto-not-for-us": "is automatically not for {arch}",
    "deleted": "deleted from {arch}",
}

_TEXT = {"type": ["string", "null"], "maxLength": MAX_FIELD_CHARS}

BODY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://busgate.example/schemas/wanna-build.build.json",
    "title": "wanna-build.build.<state>",
    "description": "Body (msg) of org.<distribution>.<env>.wanna-build.build.<state>: one row "
                   "of wanna-build's transactions log (a build state change), enriched from its "
                   "packages row. <state> is the new state slugged: needs-build, building, "
                   "built, build-attempted, uploaded, installed, dep-wait, bd-uninstallable, "
                   "failed, not-for-us, auto-not-for-us, failed-removed, dep-wait-removed, "
                   "deleted (the source left the archive and its row was deleted); another "
                   "state is slugged the same way (lowercase, other characters as '-'), a NULL "
                   "one is 'unknown'. Text columns are UTF-8; bytes that are not (SQL_ASCII "
                   "databases) appear as \\xNN.",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "architecture", "distribution", "package", "version", "previous_state", "state",
        "action", "user", "real_user", "time", "package_row", "builder", "failed",
        "binary_nmu_version", "notes", "depends", "truncated", "link",
    ],
    "$defs": {"text": _TEXT},
    "properties": {
        "architecture": {"$ref": "#/$defs/text", "description": "e.g. amd64"},
        "distribution": {"$ref": "#/$defs/text", "description": "wanna-build distribution, "
                         "e.g. sid, trixie, bookworm-security"},
        "package": {"$ref": "#/$defs/text", "description": "source package name"},
        "version": {"$ref": "#/$defs/text", "description": "source version (a binNMU's +bN "
                    "is in binary_nmu_version)"},
        "previous_state": {"$ref": "#/$defs/text", "description": "transactions.prevstate as "
                           "written (e.g. Needs-Build); null when wanna-build wrote (none)"},
        "state": {"$ref": "#/$defs/text", "description": "transactions.state as written, e.g. "
                  "Needs-Build, Dep-Wait, deleted"},
        "action": {"$ref": "#/$defs/text", "description": "the command that changed it, e.g. "
                   "--take, --set-failed, --binNMU, --merge-v3: Installed, --merge-all (dose)"},
        "user": {"$ref": "#/$defs/text", "description": "transactions.set_user: the user the "
                 "change was made as (a buildd for --take/--built...)"},
        "real_user": {"$ref": "#/$defs/text", "description": "transactions.real_user: who ran "
                      "the command"},
        "time": {"type": "string", "format": "date-time", "description": "transactions.time "
                 "(the start of the writing transaction), ISO 8601 in UTC"},
        "package_row": {"enum": ["current", "changed", "gone"], "description": "current: the "
                        "packages row still shows this version and state, and builder/failed/"
                        "binary_nmu_version/notes/depends come from it; changed: it has moved "
                        "on since (those fields are null); gone: there is no packages row "
                        "(deleted)"},
        "builder": {"$ref": "#/$defs/text", "description": "buildd or user holding the build"},
        "failed": {"type": ["string", "null"], "description": "failure text, cut at "
                   "wannabuild.max_failure_chars characters ('failed' is then listed in "
                   "truncated)"},
        "binary_nmu_version": {"type": ["integer", "null"],
                               "description": "N of a binNMU (+bN)"},
        "notes": {"$ref": "#/$defs/text", "description": "merge notes: uncompiled, "
                  "out-of-date, related, ..."},
        "depends": {"$ref": "#/$defs/text", "description": "what a Dep-Wait package waits "
                    "for"},
        "truncated": {"type": "array", "uniqueItems": True, "items": {"enum": TRUNCATABLE},
                      "description": "fields cut to their limit (1000 characters; failed: "
                                     "wannabuild.max_failure_chars)"},
        "link": {"type": ["string", "null"], "format": "uri", "minLength": 1,
                 "description": "the build status page of package in distribution (its "
                                "pattern: translate.DEFAULT_LINK); null when either is null"},
    },
}


class BuildStateChange(Message):
    """``wanna-build.build.<state>``: a package's build on one architecture changed state."""

    name = "busgate.wanna-build.build.state.v1"
    topic_tokens = ("wanna-build", "build", "*")
    overview = counts_as({"built": ("builds", "built"),
                "build-attempted": ("builds", "failed")})
    body_schema = BODY_SCHEMA
    severity = INFO

    def __init__(self, body: Any, topic: str = "",
                 headers: Mapping[str, Any] | None = None):
        super().__init__(body, topic, headers)
        # One class for every state, so the severity is the instance's: a failed build
        # is WARNING whatever other states exist.
        if self.state_slug in FAILED_STATES:
            self.severity = WARNING  # type: ignore[misc]

    @property
    def _body(self) -> Mapping[str, Any]:
        return self.body if isinstance(self.body, Mapping) else {}

    @property
    def state_slug(self) -> str:
        """The topic's last token (from the body's state, as the adapter made it)."""
        state = self._body.get("state")
        return states.slug(state if isinstance(state, str) else None)

    @property
    def summary(self) -> str:
        if not isinstance(self.body, Mapping):
            return super().summary
        body = self._body
        what = " ".join(_text(v) for v in (body.get("package"), self.full_version()) if v)
        arch = _text(body.get("architecture")) or "?"
        distribution = _text(body.get("distribution"))
        where = f"{arch} ({distribution})" if distribution else arch
        phrase = PHRASES.get(self.state_slug)
        if phrase is None:
            phrase = f"is {_text(body.get('state')) or 'in an unknown state'} on {{arch}}"
        line = f"{what or 'a package'} {phrase.format(arch=where)}"
        if self.state_slug == "dep-wait" and _text(body.get("depends")):
            line += f": {_text(body.get('depends'))}"
        builder = _text(body.get("builder"))
        if self.state_slug == "building" and builder:
            line += f" by {builder}"
        return clip(line)

    def full_version(self) -> str:
        """The version as built: ``4.31-1+b2`` for a binNMU."""
        version = _text(self._body.get("version"))
        nmu = self._body.get("binary_nmu_version")
        if version and isinstance(nmu, int) and not isinstance(nmu, bool):
            return f"{version}+b{nmu}"
        return version

    @property
    def url(self) -> str | None:
        link = self._body.get("link")
        return link if isinstance(link, str) and link else None

    @property
    def usernames(self) -> list[str]:
        users: list[str] = []
        for field in ("user", "real_user"):
            value = self._body.get(field)
            if isinstance(value, str) and value and value not in users:
                users.append(value)
        return users

    @property
    def packages(self) -> list[str]:
        package = self._body.get("package")
        return [package] if isinstance(package, str) and package else []


def _text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    return " ".join(str(value).split())


TYPES: list[type[Message]] = [BuildStateChange]
