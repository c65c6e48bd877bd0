"""One push -> one ``git.<branch|tag>.<create|update|delete>`` event per ref update.

The ref updates themselves come from stdin and need no git; everything git
adds (commits, forced flag, tag details) is best effort within the deadline. An
event whose details git could not finish in time carries ``complete: false``
instead of being dropped, so a slow repository never loses a push notice.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from adapters.scm.commits import CommitList, introduced
from adapters.scm.git import Git, GitError
from adapters.scm.refs import RefUpdate
from adapters.scm.tags import read_tags
from adapters.scm.text import clean
from gateway.config import GitSettings
from gateway.event import Event


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
    """Events for ``updates`` (branches and tags; other refs are skipped)."""
    push = Push()
    wanted = [u for u in updates if u.object is not None]
    if not wanted:
        return push
    now = time.time() if now is None else now
    refs: dict[bytes, tuple[str, str]] = {}
    before: list[str] | None = None  # None: unknown, so no commit can be called new
    try:
        refs = current_refs(git)
        before = exclusions(refs, updates)
    except GitError as exc:
        push.problems.append(str(exc))
    tag_oids = sorted({u.new for u in wanted if u.new and refs.get(u.raw_ref, ("", ""))[1] == "tag"
                       and refs[u.raw_ref][0] == u.new})
    commitish: set[str] | None = set()  # None: unknown
    both = sorted({oid for u in wanted if u.old and u.new for oid in (u.old, u.new)})
    if both:
        try:
            commitish = commits_among(git, both)
        except GitError as exc:
            commitish = None
            push.problems.append(str(exc))
    tags: dict[str, dict[str, Any]] = {}
    if tag_oids and not git.deadline.expired:
        try:
            tags = read_tags(git, tag_oids, settings.max_body_chars)
        except GitError as exc:
            push.problems.append(str(exc))
    for update in wanted:
        body, problem = _body(git, update, refs, before, tags, commitish, repo, who, settings)
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


def current_refs(git: Git) -> dict[bytes, tuple[str, str]]:
    """Every ref of the repository now: raw name -> (object id, object type)."""
    out = git.run(["for-each-ref", "--format=%(objectname) %(objecttype) %(refname)"],
                  limit=1 << 28)
    if out.cut:
        raise GitError("for-each-ref output over 256 MiB")
    refs = {}
    for line in out.data.split(b"\n"):
        oid, _, rest = line.partition(b" ")
        kind, _, name = rest.partition(b" ")
        if name:
            refs[name] = (oid.decode("ascii", "replace"), kind.decode("ascii", "replace"))
    return refs


def commits_among(git: Git, oids: Sequence[str]) -> set[str]:
    """Those of ``oids`` that are commits or tags of commits (one ``cat-file`` for all)."""
    stdin = "".join(f"{oid}^{{commit}}\n" for oid in oids).encode("ascii")
    out = git.run(["cat-file", "--batch-check=%(objecttype)"], stdin, limit=32 * len(oids) + 64)
    lines = out.data.decode("ascii", "replace").splitlines()
    if len(lines) != len(oids):
        raise GitError("unexpected git cat-file --batch-check output")
    return {oid for oid, line in zip(oids, lines, strict=True) if line == "commit"}


def exclusions(refs: Mapping[bytes, tuple[str, str]], updates: Sequence[RefUpdate]) -> list[str]:
    """Object ids of all refs as they were before the push."""
    pushed = {u.raw_ref for u in updates}
    ids = {oid for name, (oid, _) in refs.items() if name not in pushed}
    ids.update(u.old for u in updates if u.old)
    return sorted(ids)


def _body(git: Git, update: RefUpdate, refs: Mapping[bytes, tuple[str, str]],
          before: list[str] | None, tags: Mapping[str, dict[str, Any]], commitish: set[str] | None,
          repo: str, who: str, settings: GitSettings) -> tuple[dict[str, Any], str | None]:
    current = refs.get(update.raw_ref)
    object_type = current[1] if current and current[0] == update.new else None
    forced: bool | None = False
    problem = None
    commits = CommitList()
    if update.new is not None:
        if before is None:
            commits = CommitList(total=None, complete=False, error="refs before the push unknown")
        elif git.deadline.expired:
            commits = CommitList(total=None, complete=False, error="out of time")
        else:
            commits = introduced(git, update.new, before, max_commits=settings.max_commits,
                                 max_files=settings.max_files, max_chars=settings.max_body_chars)
        problem = commits.error
    if update.old is not None and update.new is not None:
        if commitish is None:
            forced = None
        elif update.old in commitish and update.new in commitish:  # else it means nothing
            forced, error = _forced(git, update.old, update.new)
            problem = problem or error
    complete = commits.complete and forced is not None
    return {
        "repository": repo,
        "ref": update.ref,
        "name": update.name,
        "old": update.old,
        "new": update.new,
        "object_type": object_type,
        "pusher": who,
        "forced": forced,
        "commits": commits.commits,
        "total_commits": commits.total,
        "truncated": commits.truncated,
        "complete": complete,
        "tag": tags.get(update.new) if update.new else None,
    }, problem


def _forced(git: Git, old: str, new: str) -> tuple[bool | None, str | None]:
    """Non-fast-forward? ``None`` when git cannot tell (out of time, object gone)."""
    if git.deadline.expired:
        return None, "out of time"
    try:
        code = git.status(["merge-base", "--is-ancestor", old, new])
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
