"""Message types of pushes: ``<git.service>.<branch|tag>.<create|update|delete>``.

One class per topic, all sharing one body shape (one pushed ref update, from
``busgate git-hook``); what differs is what a create, an update or a delete can
carry. The service token is ``git`` by default and ``git.service`` in a
deployment (:func:`topic_overrides`), while the type names stay
``busgate.git.<object>.<event>.v1`` whatever the token, so a consumer keyed on the
schema name does not care how the operator named the service.

The link is the body's ``url``, written by the hook from ``git.web_url`` (a type
sees only the body, and the web address of a repository is the operator's to
say); without it a push has no link.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.messages import Message, clip, counts_as

#: Characters of a commit id shown in a summary.
SHORT_ID = 8

_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_OID = {"type": "string", "pattern": "^([0-9a-f]{40}|[0-9a-f]{64})$"}
_DATE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d([+-]\d\d:\d\d|Z)$"
_PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "email"],
           "properties": {"name": {"type": "string"}, "email": {"type": "string"}}}
_FILE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path", "added", "deleted"],
    "properties": {
        "path": {"type": "string",
                 "description": "path in the repository; non-UTF-8 bytes as \\xNN"},
        "added": {"type": ["integer", "null"], "minimum": 0,
                  "description": "lines added; null for a binary file"},
        "deleted": {"type": ["integer", "null"], "minimum": 0,
                    "description": "lines deleted; null for a binary file"},
    },
}
_COMMIT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "parents", "author", "committer", "date", "committed", "subject", "body",
                 "body_truncated", "files", "total_files", "files_truncated"],
    "properties": {
        "id": _OID,
        "parents": {"type": "array", "items": _OID},
        "author": _PERSON,
        "committer": _PERSON,
        "date": {"type": "string", "description": "author date, ISO 8601", "pattern": _DATE},
        "committed": {"type": "string", "description": "committer date, ISO 8601",
                      "pattern": _DATE},
        "subject": {"type": "string",
                    "description": "first paragraph of the message, on one line "
                                   "(at most git.max_body_chars)"},
        "body": {"type": "string",
                 "description": "rest of the message, at most git.max_body_chars characters"},
        "body_truncated": {"type": "boolean"},
        "files": {"type": "array", "items": _FILE,
                  "description": "files changed (relative to the first parent for a merge), "
                                 "at most git.max_files"},
        "total_files": {"type": "integer", "minimum": 0},
        "files_truncated": {"type": "boolean"},
    },
}
_COMMITS = {
    "type": "array",
    "items": _COMMIT,
    "description": "commits the push introduced (not reachable from any ref before it) that "
                   "belong to this ref: each belongs to exactly one event of the push, that of "
                   "the pushed tip nearest to it (ties: branches before tags, then push order); "
                   "newest first, at most git.max_commits, git.max_event_bytes of JSON, and a "
                   "fair share of git.max_push_commits",
}
_TOTAL = {"type": ["integer", "null"], "minimum": 0,
          "description": "how many of the push's new commits belong to this event (summed over "
                         "a push's events: each new commit once); null if unknown"}
_TAG = {
    "oneOf": [
        {"type": "null"},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["object", "type", "name", "tagger", "message", "message_truncated",
                         "signed"],
            "properties": {
                "object": {"type": "string", "description": "the tagged object's id"},
                "type": {"type": "string",
                         "description": "the tagged object's type (commit, tag, tree, blob)"},
                "name": {"type": "string"},
                "tagger": {"oneOf": [
                    {"type": "null"},
                    {"type": "object", "additionalProperties": False,
                     "required": ["name", "email", "date"],
                     "properties": {"name": {"type": "string"}, "email": {"type": "string"},
                                    "date": {"type": ["string", "null"]}}},
                ]},
                "message": {"type": "string",
                            "description": "without any signature block, at most "
                                           "git.max_body_chars"},
                "message_truncated": {"type": "boolean"},
                "signed": {"type": "boolean",
                           "description": "the tag carried a PGP/SSH signature"},
            },
        },
    ],
    "description": "annotated tag details",
}
_REQUIRED = ["commits", "complete", "forced", "name", "new", "object_type", "old", "pusher", "ref",
             "repository", "tag", "total_commits", "truncated"]


def _schema(obj: str, event: str) -> dict[str, Any]:
    """The body schema of ``git.<obj>.<event>``: one shape, narrowed by what the event allows."""
    topic = f"git.{obj}.{event}"
    prefix = "refs/heads/" if obj == "branch" else "refs/tags/"
    created, deleted = event == "create", event == "delete"
    return {
        "$schema": _SCHEMA,
        "$id": f"https://busgate.example/schemas/{topic}.json",
        "title": topic,
        "description": f"Body (msg) of org.<distribution>.<env>.<git.service>.{obj}.{event}: "
                       "one pushed ref update, from `busgate git-hook`.",
        "type": "object",
        "additionalProperties": False,
        "required": _REQUIRED,
        "properties": {
            "repository": {"type": "string",
                           "description": "--repo, git.repo, or derived from the repository path"},
            "ref": {"type": "string", "pattern": f"^{prefix}.",
                    "description": "full ref name; non-UTF-8 bytes as \\xNN"},
            "name": {"type": "string", "minLength": 1,
                     "description": "ref name without refs/heads/ or refs/tags/"},
            "old": {"type": "null"} if created else _OID,
            "new": {"type": "null"} if deleted else _OID,
            "object_type": {"type": ["string", "null"],
                            "description": "type of the new object (commit; tag for an annotated "
                                           "tag); null if unknown or deleted"},
            "pusher": {"type": "string", "minLength": 1,
                       "description": "from git.pusher_env variables, else the Unix user"},
            "forced": {"type": ["boolean", "null"],
                       "description": "non-fast-forward update; null when git could not tell "
                                      "in time"} if event == "update" else {"const": False},
            "commits": {"type": "array", "maxItems": 0} if deleted else _COMMITS,
            "total_commits": {"const": 0} if deleted else _TOTAL,
            "truncated": {"type": "boolean",
                          "description": "commits lists fewer than total_commits (or the total "
                                         "is unknown): the rest are counted, not listed"},
            "complete": {"type": "boolean",
                         "description": "false when git could not finish within "
                                        "git.time_budget: commits, total_commits or forced may "
                                        "be partial"},
            "tag": _TAG if obj == "tag" and not deleted else {"type": "null"},
            "url": {"type": ["string", "null"], "pattern": "^https?://",
                    "description": "web page of the pushed commit (git.web_url filled in); null "
                                   "when git.web_url is empty or for a deletion; absent from "
                                   "events of hooks older than the setting"},
        },
    }


# -- reading a body that may be anything --------------------------------------------------


def _text(body: Any, key: str) -> str:
    value = body.get(key) if isinstance(body, Mapping) else None
    return value if isinstance(value, str) else ""


def _commits(body: Any) -> list[Mapping[str, Any]]:
    value = body.get("commits") if isinstance(body, Mapping) else None
    return [c for c in value if isinstance(c, Mapping)] if isinstance(value, list) else []


def _count(number: int) -> str:
    return f"{number} commit" if number == 1 else f"{number} commits"


class GitMessage(Message):
    """One pushed ref update (the base of the six push types)."""

    #: The topic's object and event tokens (the service token is the deployment's).
    git_object: str = ""
    git_event: str = ""

    @property
    def pusher(self) -> str:
        return _text(self.body, "pusher") or "someone"

    @property
    def repository(self) -> str:
        return _text(self.body, "repository") or "a repository"

    @property
    def ref_name(self) -> str:
        return _text(self.body, "name") or _text(self.body, "ref") or "?"

    @property
    def tip(self) -> str:
        """Short id of the pushed commit (an annotated tag's target), or ``""``."""
        tag = self.body.get("tag") if isinstance(self.body, Mapping) else None
        target = _text(tag, "object") if isinstance(tag, Mapping) else ""
        return (target or _text(self.body, "new"))[:SHORT_ID]

    @property
    def total(self) -> int | None:
        """New commits of this event; None when git could not count them."""
        value = self.body.get("total_commits") if isinstance(self.body, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return None

    @property
    def subject(self) -> str:
        """``: "subject"`` of the newest listed commit, or ``""``."""
        commits = _commits(self.body)
        subject = _text(commits[0], "subject") if commits else ""
        return f': "{subject}"' if subject else ""

    @property
    def url(self) -> str | None:
        url = _text(self.body, "url")
        return url if url.startswith(("https://", "http://")) else None

    @property
    def usernames(self) -> list[str]:
        pusher = _text(self.body, "pusher")
        return [pusher] if pusher else []

    @property
    def packages(self) -> list[str]:
        """The repository's last path part: a packaging repository is named after its source."""
        name = _text(self.body, "repository").rsplit("/", 1)[-1]
        return [name] if name else []


class BranchCreate(GitMessage):
    name = "busgate.git.branch.create.v1"
    topic_tokens = ("git", "branch", "create")
    overview = counts_as({"create": ("pushes", "branches")})
    git_object, git_event = "branch", "create"
    body_schema = _schema("branch", "create")

    @property
    def summary(self) -> str:
        total = self.total
        if total:
            return clip(f"{self.pusher} pushed {_count(total)} to {self.repository} "
                        f"{self.ref_name} (new branch){self.subject}")
        return clip(f"{self.pusher} created branch {self.ref_name} in {self.repository} "
                    f"at {self.tip}{self.subject}")


class BranchUpdate(GitMessage):
    name = "busgate.git.branch.update.v1"
    topic_tokens = ("git", "branch", "update")
    overview = counts_as({"update": ("pushes", "branches")})
    git_object, git_event = "branch", "update"
    body_schema = _schema("branch", "update")

    @property
    def summary(self) -> str:
        forced = isinstance(self.body, Mapping) and self.body.get("forced") is True
        verb = "force-pushed" if forced else "pushed"
        total = self.total
        where = f"{self.repository} {self.ref_name}"
        if total:
            return clip(f"{self.pusher} {verb} {_count(total)} to {where}{self.subject}")
        if total is None:
            return clip(f"{self.pusher} {verb} to {where} ({self.tip}){self.subject}")
        if forced:  # no new commit: a rewind to history the repository has
            return clip(f"{self.pusher} force-pushed {where} back to {self.tip}")
        return clip(f"{self.pusher} fast-forwarded {where} to {self.tip}")


class BranchDelete(GitMessage):
    name = "busgate.git.branch.delete.v1"
    topic_tokens = ("git", "branch", "delete")
    overview = counts_as({"delete": ("pushes", "branches")})
    git_object, git_event = "branch", "delete"
    body_schema = _schema("branch", "delete")

    @property
    def summary(self) -> str:
        return clip(f"{self.pusher} deleted branch {self.ref_name} in {self.repository}")


class TagCreate(GitMessage):
    name = "busgate.git.tag.create.v1"
    topic_tokens = ("git", "tag", "create")
    overview = counts_as({"create": ("pushes", "tags")})
    git_object, git_event = "tag", "create"
    body_schema = _schema("tag", "create")

    @property
    def summary(self) -> str:
        tag = self.body.get("tag") if isinstance(self.body, Mapping) else None
        message = _text(tag, "message").strip().split("\n", 1)[0].strip() \
            if isinstance(tag, Mapping) else ""
        total = self.total
        new = f" with {_count(total)}" if total else ""
        head = f"{self.pusher} tagged {self.repository} {self.ref_name}{new}"
        if message:
            return clip(f'{head}: "{message}"')
        return clip(f"{head} at {self.tip}{self.subject if total else ''}")


class TagUpdate(GitMessage):
    name = "busgate.git.tag.update.v1"
    topic_tokens = ("git", "tag", "update")
    overview = counts_as({"update": ("pushes", "tags")})
    git_object, git_event = "tag", "update"
    body_schema = _schema("tag", "update")

    @property
    def summary(self) -> str:
        total = self.total
        new = f" with {_count(total)}" if total else ""
        return clip(f"{self.pusher} moved tag {self.ref_name} in {self.repository} to "
                    f"{self.tip}{new}")


class TagDelete(GitMessage):
    name = "busgate.git.tag.delete.v1"
    topic_tokens = ("git", "tag", "delete")
    overview = counts_as({"delete": ("pushes", "tags")})
    git_object, git_event = "tag", "delete"
    body_schema = _schema("tag", "delete")

    @property
    def summary(self) -> str:
        return clip(f"{self.pusher} deleted tag {self.ref_name} in {self.repository}")


TYPES: list[type[GitMessage]] = [BranchCreate, BranchUpdate, BranchDelete, TagCreate, TagUpdate,
                                 TagDelete]


def topic_overrides(section: Any) -> dict[type[Message], tuple[str, ...]]:
    """Topic tokens of each push type under ``[git] service`` (the source's
    ``topic_overrides``): ``("<service>", "branch", "update")`` and so on."""
    service = getattr(section, "service", "git") or "git"
    return {cls: (service, cls.git_object, cls.git_event) for cls in TYPES}
