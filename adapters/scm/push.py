"""One push -> one ``git.<branch|tag>.<create|update|delete>`` event per ref update.

The ref updates themselves come from stdin and need no git; everything git
adds (commits, forced flag, tag details) is best effort within the deadline. An
event whose details git could not finish in time carries ``complete: false``
instead of being dropped, so a slow repository never loses a push notice.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from adapters.scm.commits import Described, describe
from adapters.scm.git import Git, GitError
from adapters.scm.graph import NewCommits, attribute, new_commits, quotas, reaches
from adapters.scm.refs import RefUpdate
from adapters.scm.settings import GitSettings
from adapters.scm.tags import read_tags
from adapters.scm.text import clean
from gateway.event import Event

#: Most new commits one fast-forward check walks before asking ``git merge-base``.
WALK_LIMIT = 50_000


@dataclass
class Push:
    """Events of one push, and what went wrong while gathering their details."""

    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def repo_name(git_dir: str | os.PathLike[str], root: str = "") -> str:
    """``/srv/git/debian/dpkg.git`` -> ``dpkg``, or ``debian/dpkg`` below ``root=/srv/git``.

    A non-bare repository (``.../dpkg/.git``) is named after its work tree.
    """
    path = PurePath(os.path.normpath(os.fspath(git_dir)))
    if path.name == ".git":
        path = path.parent
    parts: Sequence[str] = (path.name,)
    if root:
        base = PurePath(os.path.normpath(root))
        if path != base and path.is_relative_to(base):
            parts = path.relative_to(base).parts
    *dirs, last = parts
    last = last.removesuffix(".git") or last
    return clean("/".join([*dirs, last]))


def pusher(env: Mapping[str, str], names: Sequence[str]) -> str:
    """The first non-empty variable of ``names`` (set by the git server), else the Unix user."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return clean(value)
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def build_events(git: Git, updates: Sequence[RefUpdate], *, repo: str, who: str,
                 settings: GitSettings, now: float | None = None) -> Push:
    """Events for ``updates`` (branches and tags; other refs are skipped), in push order.

    git runs a fixed number of times whatever the number of refs: ``for-each-ref``,
    one ``cat-file`` for every pushed id, one ``rev-list`` for the new history, one
    ``cat-file --batch`` for tag objects and one ``log`` for the listed commits
    (plus ``merge-base`` for an update the new history alone cannot call a fast-forward).
    """
    push = Push()
    wanted = [u for u in updates if u.object is not None]
    if len(wanted) > settings.max_refs:
        push.problems.append(f"{len(wanted) - settings.max_refs} ref update(s) over "
                             f"git.max_refs = {settings.max_refs} not published")
        wanted = wanted[:settings.max_refs]
    if not wanted:
        return push
    now = time.time() if now is None else now
    before: list[str] | None = None  # None: unknown, so no commit can be called new
    try:
        before = exclusions(current_refs(git), updates)
    except GitError as exc:
        push.problems.append(str(exc))
    objects: dict[str, tuple[str, str | None]] | None = {}  # None: unknown
    ids = sorted({oid for u in wanted for oid in (u.old, u.new) if oid})
    try:
        objects = inspect(git, ids)
    except GitError as exc:
        objects = None
        push.problems.append(str(exc))
    tags = _tags(git, wanted, objects, settings, push)
    new, owner = _history(git, wanted, objects, before, settings, push)
    owned: list[list[str]] = [[] for _ in wanted]
    totals = [0] * len(wanted)
    for commit in new.order:
        index = owner.get(commit)
        if index is not None:
            totals[index] += 1
            if len(owned[index]) < settings.max_commits:
                owned[index].append(commit)
    shares = quotas([len(o) for o in owned], settings.max_push_commits)
    chosen = [o[:share] for o, share in zip(owned, shares, strict=True)]
    described = Described()
    wanted_ids = [c for ids_ in chosen for c in ids_]
    if wanted_ids:
        if git.deadline.expired:
            described = Described(complete=False, error="out of time")
        else:
            described = describe(git, wanted_ids, max_files=settings.max_files,
                                 max_chars=settings.max_body_chars)
        if described.error:
            push.problems.append(described.error)
    for index, update in enumerate(wanted):
        state = _State(objects, new, chosen[index], totals[index], described)
        body, problem = _body(git, update, state, tags, repo, who, settings)
        if problem:
            push.problems.append(f"{update.ref}: {problem}")
        push.events.append(Event(
            service=settings.service,
            object=update.object or "branch",
            event=update.action,
            key=f"git:{repo}:{update.ref}:{update.old or '0'}:{update.new or '0'}",
            body=body,
            usernames=(who,),
            packages=(repo.rsplit("/", 1)[-1],),
            time=now,
        ))
    return push


@dataclass(slots=True)
class _State:
    """What git said about the push, as one event needs it."""

    #: pushed id -> (type, peeled commit or None); None when git could not say
    objects: dict[str, tuple[str, str | None]] | None
    new: NewCommits
    chosen: list[str]
    total: int
    described: Described


def current_refs(git: Git) -> dict[bytes, str]:
    """Every ref of the repository now: raw name -> object id (no object is read)."""
    out = git.run(["for-each-ref", "--format=%(objectname) %(refname)"], limit=1 << 28)
    if out.cut:
        raise GitError("for-each-ref output over 256 MiB")
    refs = {}
    for line in out.data.split(b"\n"):
        oid, _, name = line.partition(b" ")
        if name:
            refs[name] = oid.decode("ascii", "replace")
    return refs


def inspect(git: Git, oids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """id -> (object type, the commit it is or peels to, else None), for the ids that exist.

    One ``cat-file --batch-check`` for all: each id is asked as itself and as
    ``id^{commit}`` (an annotated tag of a commit peels to it; a tree does not).
    """
    if not oids:
        return {}
    stdin = "".join(f"{oid}\n{oid}^{{commit}}\n" for oid in oids).encode("ascii")
    out = git.run(["cat-file", "--batch-check=%(objectname) %(objecttype)"], stdin,
                  limit=160 * len(oids) + 64)
    lines = out.data.decode("ascii", "replace").splitlines()
    if len(lines) != 2 * len(oids) or out.cut:
        raise GitError("unexpected git cat-file --batch-check output")
    found: dict[str, tuple[str, str | None]] = {}
    for i, oid in enumerate(oids):
        itself, peeled = lines[2 * i].split(" "), lines[2 * i + 1].split(" ")
        if itself[-1] == "missing" or len(itself) != 2:
            continue
        commit = peeled[0] if len(peeled) == 2 and peeled[1] == "commit" else None
        found[oid] = (itself[1], commit)
    return found


def exclusions(refs: Mapping[bytes, str], updates: Sequence[RefUpdate]) -> list[str]:
    """Object ids of all refs as they were before the push."""
    pushed = {u.raw_ref for u in updates}
    ids = {oid for name, oid in refs.items() if name not in pushed}
    ids.update(u.old for u in updates if u.old)
    return sorted(ids)


def _tags(git: Git, wanted: Sequence[RefUpdate], objects: Mapping[str, tuple[str, str | None]]
          | None, settings: GitSettings, push: Push) -> dict[str, dict[str, Any]]:
    """Details of every pushed annotated tag, from one ``cat-file --batch``."""
    oids = sorted({u.new for u in wanted if u.new and objects and objects.get(u.new, ("",))[0]
                   == "tag"})
    if not oids or git.deadline.expired:
        return {}
    try:
        return read_tags(git, oids, settings.max_body_chars)
    except GitError as exc:
        push.problems.append(str(exc))
        return {}


def _history(git: Git, wanted: Sequence[RefUpdate],
             objects: Mapping[str, tuple[str, str | None]] | None, before: list[str] | None,
             settings: GitSettings, push: Push) -> tuple[NewCommits, dict[str, int]]:
    """The push's new commits and the event each belongs to (branches first, then push order)."""
    if objects is None or before is None:
        return NewCommits(complete=False, error="refs before the push unknown"), {}
    order = sorted(range(len(wanted)), key=lambda i: (wanted[i].object != "branch", i))
    tips = [(commit, i) for i in order
            for commit in [objects.get(wanted[i].new or "", ("", None))[1]] if commit]
    if not tips:
        return NewCommits(), {}
    if git.deadline.expired:
        new = NewCommits(complete=False, error="out of time")
    else:
        new = new_commits(git, sorted({c for c, _ in tips}), before,
                          max_commits=settings.max_new_commits)
    if new.error:
        push.problems.append(new.error)
    return new, attribute(new, tips)


def _body(git: Git, update: RefUpdate, state: _State, tags: Mapping[str, dict[str, Any]],
          repo: str, who: str, settings: GitSettings) -> tuple[dict[str, Any], str | None]:
    objects = state.objects
    new_info = objects.get(update.new) if objects is not None and update.new else None
    old_info = objects.get(update.old) if objects is not None and update.old else None
    object_type = new_info[0] if new_info else None
    problem = None
    complete = True
    commits: list[dict[str, Any]] = []
    total: int | None = 0
    if update.new is not None:
        if new_info is None:  # unknown to git (or git could not say)
            complete, total = False, None
            problem = "new object unknown" if objects is not None else "objects unknown"
        elif new_info[1] is not None:  # a commit, or a tag of one
            if not state.new.complete:
                complete, total, problem = False, None, state.new.error
            else:
                total = state.total
                commits, cut = _listed(state, settings.max_event_bytes)
                if cut:
                    complete, problem = False, state.described.error or "commits not described"
        if object_type == "tag" and update.new not in tags:
            complete, problem = False, problem or "tag object not read"
    forced: bool | None = False
    if update.old is not None and update.new is not None:
        if objects is None:
            forced = None
        elif old_info and new_info and old_info[1] and new_info[1]:  # else it means nothing
            forced, error = _forced(git, state.new, old_info[1], new_info[1], settings)
            problem = problem or error
    complete = complete and forced is not None
    sha = new_info[1] if new_info and new_info[1] else update.new
    return {
        "repository": repo,
        "ref": update.ref,
        "name": update.name,
        "old": update.old,
        "new": update.new,
        "object_type": object_type,
        "pusher": who,
        "forced": forced,
        "commits": commits,
        "total_commits": total,
        "truncated": total is None or total > len(commits),
        "complete": complete,
        "tag": tags.get(update.new) if update.new else None,
        "url": web_link(settings.web_url, repo=repo, ref=update.ref, name=update.name, sha=sha),
    }, problem


def web_link(template: str, *, repo: str, ref: str, name: str, sha: str | None) -> str | None:
    """``git.web_url`` filled in for one pushed ref, or None (no template, a deletion, or a
    result that is not an http(s) address). Names are percent-encoded (``/`` kept), so a
    ref name cannot add to the address beyond its own place."""
    if not template or sha is None:
        return None
    from urllib.parse import quote

    link = template.replace("{sha}", sha)
    for key, value in (("{repo}", repo), ("{ref}", ref), ("{name}", name)):
        link = link.replace(key, quote(value, safe="/"))
    return link if link.startswith(("https://", "http://")) else None


def _listed(state: _State, max_bytes: int) -> tuple[list[dict[str, Any]], bool]:
    """The chosen commits' details, newest first, within ``max_bytes`` of JSON; and whether
    a chosen commit is missing because git did not describe it in time."""
    listed: list[dict[str, Any]] = []
    size = 2
    for commit_id in state.chosen:
        commit = state.described.commits.get(commit_id)
        if commit is None:
            return listed, True
        size += len(json.dumps(commit, ensure_ascii=False).encode()) + 1
        if size > max_bytes:
            break
        listed.append(commit)
    return listed, False


def _forced(git: Git, new: NewCommits, old: str, tip: str, settings: GitSettings
            ) -> tuple[bool | None, str | None]:
    """Non-fast-forward? Answered from the new history when it can, else by ``merge-base``;
    ``None`` when git cannot tell (out of time, object gone)."""
    if git.deadline.expired:
        return None, "out of time"
    if reaches(new, tip, old, limit=WALK_LIMIT):
        return False, None
    if git.deadline.expired:
        return None, "out of time"
    try:
        code = git.status(["merge-base", "--is-ancestor", old, tip])
    except GitError as exc:
        return None, str(exc)
    if code in (0, 1):
        return code == 1, None
    return None, f"git merge-base exited with status {code}"


def git_dir(env: Mapping[str, str], executable: str = "git", timeout: float = 1.0) -> Path:
    """The repository a hook runs in: ``$GIT_DIR`` (git sets it for hooks), else asks git."""
    value = env.get("GIT_DIR")
    if value:
        return Path(value).resolve()
    try:
        out = subprocess.run([executable, "rev-parse", "--absolute-git-dir"], env=dict(env),
                             capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise GitError("git rev-parse ran out of time") from None
    except OSError as exc:
        raise GitError(f"cannot run {executable}: {exc.strerror}") from None
    if out.returncode != 0:
        raise GitError("not inside a git repository (and $GIT_DIR is not set)")
    return Path(os.fsdecode(out.stdout.rstrip(b"\n")))
