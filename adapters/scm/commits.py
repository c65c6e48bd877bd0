"""Details of chosen commits (message, people, changed files) from ONE ``git log --no-walk``.

Which commits a push introduced, and which event lists them, is decided by
:mod:`adapters.scm.graph`; this module only describes the few commits that are
listed, all in one git process. Ids go to git on stdin, never on the command
line. Text fields are decoded one by one (UTF-8, else Latin-1, as the mail
adapters do), never with replacement characters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
class Described:
    """Commit id -> details, for as many of the asked ids as git gave in time."""

    commits: dict[str, dict[str, Any]] = field(default_factory=dict)
    complete: bool = True
    error: str | None = None


def describe(git: Git, ids: Sequence[str], *, max_files: int, max_chars: int) -> Described:
    """Details of ``ids`` (commits), from one ``git log --no-walk=unsorted --stdin``."""
    result = Described()
    if not ids:
        return result
    stdin = ("\n".join(ids) + "\n").encode("ascii")
    args = ["log", "--stdin", "--no-walk=unsorted", *LOG_OPTIONS, f"--format={FORMAT}"]
    stream = git.stream(args, stdin)
    try:
        tokens = split_nul(stream, max(4 * max_chars + 8, 8192))
        for commit in parse_log(tokens, max_files=max_files, max_chars=max_chars):
            result.commits[commit["id"]] = commit
    except GitError as exc:
        result.complete, result.error = False, str(exc)
    finally:
        stream.close()
    if result.complete and len(result.commits) < len(set(ids)):
        result.complete, result.error = False, "git log did not describe every commit"
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
