"""The commits a push introduced, newest first, from ONE ``git log`` per ref update.

"Introduced" means not reachable from any ref as it was before the push. A
post-receive hook runs after the refs moved, so "before" is rebuilt: every ref
not in this push at its current value, plus the old value of every pushed ref.
All ids go to git on stdin (``--stdin``), never on the command line, so a
repository with 100,000 refs does not hit the argument-size limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from adapters.scm.git import Git, GitError, split_nul
from adapters.scm.text import clip, decode

#: One record per commit: a \x01-led id, nine NUL-separated fields, then a \x02 sentinel.
#: ``--numstat -z`` then adds ``added\tdeleted\tpath`` tokens until the next record.
FIELDS = ("%H", "%P", "%an", "%ae", "%aI", "%cn", "%ce", "%cI", "%s", "%b")
FORMAT = "%x01" + "%x00".join(FIELDS) + "%x00%x02"

LOG_OPTIONS = (
    "-z", "--numstat", "--no-renames", "--no-textconv", "--no-ext-diff", "--no-relative",
    "--diff-merges=first-parent", "--no-show-signature", "--encoding=UTF-8", "--no-color",
)


@dataclass
class CommitList:
    """What one ref update introduced, as far as the time budget allowed."""

    commits: list[dict[str, Any]] = field(default_factory=list)
    #: How many commits the push introduced in all (``None`` if git could not say).
    total: int | None = 0
    #: True when git answered fully; False means ``commits``/``total`` may be partial.
    complete: bool = True
    error: str | None = None

    @property
    def truncated(self) -> bool:
        return self.total is None or self.total > len(self.commits)


def revisions(tip: str, exclude: Iterable[str]) -> bytes:
    """``--stdin`` input: the new tip, then every "before" id negated."""
    lines = [tip, *(f"^{oid}" for oid in exclude)]
    return ("\n".join(lines) + "\n").encode("ascii")


def introduced(git: Git, tip: str, exclude: Iterable[str], *, max_commits: int,
               max_files: int, max_chars: int) -> CommitList:
    """Commits reachable from ``tip`` but from none of ``exclude``, newest first."""
    stdin = revisions(tip, exclude)
    result = CommitList()
    args = ["log", "--stdin", *LOG_OPTIONS, f"--max-count={max_commits}", f"--format={FORMAT}"]
    stream = git.stream(args, stdin)
    try:
        tokens = split_nul(stream, max(4 * max_chars + 8, 8192))
        for commit in parse_log(tokens, max_files=max_files, max_chars=max_chars):
            result.commits.append(commit)
    except GitError as exc:
        result.complete, result.error = False, str(exc)
    finally:
        stream.close()
    result.total = len(result.commits)
    if result.complete and len(result.commits) >= max_commits:
        try:
            out = git.run(["rev-list", "--count", "--stdin"], stdin, limit=64)
            result.total = int(out.data.strip())
        except (GitError, ValueError) as exc:
            result.total, result.complete, result.error = None, False, str(exc)
    elif not result.complete:
        result.total = None
    return result


def parse_log(tokens: Iterator[bytes], *, max_files: int, max_chars: int
              ) -> Iterator[dict[str, Any]]:
    """Commits from ``git log -z --numstat --format=FORMAT`` tokens.

    A commit is yielded once its file list is complete (at the next record or at
    the end), so a stream cut by the deadline yields only whole commits.
    """
    current: dict[str, Any] | None = None
    for token in tokens:
        if token.startswith(b"\x01"):
            if current is not None:
                yield current
            header = [token[1:]]
            for value in tokens:
                header.append(value)
                if len(header) == len(FIELDS) + 1:
                    break
            if len(header) < len(FIELDS) + 1:  # stream ended inside a record
                return
            if header[-1] != b"\x02":
                raise GitError("unexpected git log output (record without sentinel)")
            current = _commit(header[:-1], max_chars)
            continue
        token = token.lstrip(b"\n")
        if not token or current is None:
            continue
        _add_file(current, token, max_files)
    if current is not None:
        yield current


def _commit(fields: list[bytes], max_chars: int) -> dict[str, Any]:
    oid, parents, an, ae, ad, cn, ce, cd, subject, body = (decode(f) for f in fields)
    body_text, body_cut = clip(body.strip("\n"), max_chars)
    subject_text, _ = clip(subject, max_chars)
    return {
        "id": oid,
        "parents": parents.split(),
        "author": {"name": an, "email": ae},
        "committer": {"name": cn, "email": ce},
        "date": ad,
        "committed": cd,
        "subject": subject_text,
        "body": body_text,
        "body_truncated": body_cut,
        "files": [],
        "total_files": 0,
        "files_truncated": False,
    }


def _add_file(commit: dict[str, Any], token: bytes, max_files: int) -> None:
    parts = token.split(b"\t", 2)
    if len(parts) != 3:
        return
    commit["total_files"] += 1
    if len(commit["files"]) >= max_files:
        commit["files_truncated"] = True
        return
    added, deleted, path = parts
    commit["files"].append({
        "path": path.decode("utf-8", "backslashreplace"),
        "added": int(added) if added.isdigit() else None,
        "deleted": int(deleted) if deleted.isdigit() else None,
    })
