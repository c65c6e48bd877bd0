"""The ``[git]`` table: what the post-receive hook describes, within which bounds."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GitSettings:
    #: Service token of SCM topics (``org.<d>.<env>.<service>.branch.update``).
    service: str = "git"
    #: Repository name; empty derives it from the repository path.
    repo: str = ""
    #: Most commits listed in one event (the rest are counted, ``truncated`` is set).
    max_commits: int = 100
    #: Seconds the hook may spend before it hands over what it has.
    time_budget: float = 2.0
    #: Longest commit body copied into an event, in characters.
    max_body_chars: int = 2000
    #: Directory holding the repositories (e.g. /srv/git); when set, the derived repository
    #: name is the path below it without ``.git`` (``debian/dpkg``), otherwise the basename.
    repo_root: str = ""
    #: Most changed files listed per commit (the rest are counted, ``files_truncated`` is set).
    max_files: int = 100
    #: Environment variables naming the pusher, first non-empty wins; else the Unix user.
    pusher_env: list[str] = field(
        default_factory=lambda: ["GL_USERNAME", "GL_USER", "REMOTE_USER", "GIT_PUSHER"])
    #: The git program the hook runs (name on PATH or absolute path).
    executable: str = "git"
    #: Most commits described in one push, shared fairly among its events.
    max_push_commits: int = 1000
    #: Most bytes of JSON in one event's commit list (the rest are counted, not listed).
    max_event_bytes: int = 262144
    #: Most new commits one push may bring for its events to be complete (memory bound).
    max_new_commits: int = 300000
    #: Most ref events from one push; further ref updates are reported, not published.
    max_refs: int = 100000
    #: Most events in one spool item: a big push becomes several items.
    max_item_events: int = 5000
    #: Web page of a pushed commit, put in each event's ``url``: ``{repo}``, ``{sha}``,
    #: ``{ref}`` and ``{name}`` are filled in (e.g.
    #: ``https://salsa.debian.org/{repo}/-/commit/{sha}``); empty = no link.
    web_url: str = ""
