"""The commits one push introduced, each given to exactly one ref event: ONE ``git rev-list``.

"Introduced" means reachable from a pushed tip but from no ref as it was before
the push. A post-receive hook runs after the refs moved, so "before" is rebuilt
by the caller: every ref not in this push at its current value, plus the old
value of every pushed ref. One walk over all tips at once costs what the new
history costs, however many refs the push has (one walk per ref cost a process
and a walk each, and listed shared history once per ref).

Attribution follows the nearest tip: each new commit belongs to the ref whose
new tip reaches it in the fewest parent steps (ties, and a commit several refs
point at: branches before tags, then push order). So a push of all tags of a
repository gives each tag the commits since the tag below it, a merged side
branch goes with its merge, and every new commit is in exactly one event,
whatever order the refs come in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from adapters.scm.git import Git, GitError


@dataclass
class NewCommits:
    """New commits (children before parents) with their owners, as far as git got."""

    #: new commit id -> its parent ids (new or not)
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: new commit ids in ``--topo-order``: newest first, no parent before its children
    order: list[str] = field(default_factory=list)
    #: True when git listed every new commit within the time budget and the count limit
    complete: bool = True
    error: str | None = None


def revisions(tips: Iterable[str], exclude: Iterable[str]) -> bytes:
    """``--stdin`` input: the new tips, then every "before" id negated."""
    lines = [*tips, *(f"^{oid}" for oid in exclude)]
    return ("\n".join(lines) + "\n").encode("ascii")


def new_commits(git: Git, tips: Sequence[str], exclude: Iterable[str], *,
                max_commits: int) -> NewCommits:
    """Every commit reachable from ``tips`` and from none of ``exclude``, up to ``max_commits``."""
    result = NewCommits()
    if not tips:
        return result
    stream = git.stream(["rev-list", "--stdin", "--topo-order", "--parents"],
                        revisions(tips, exclude))
    rest = b""
    try:
        for chunk in stream:
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                if len(result.order) >= max_commits:
                    raise GitError(f"more than {max_commits} new commits (git.max_new_commits)")
                ids = line.decode("ascii").split()
                if ids:
                    result.parents[ids[0]] = tuple(ids[1:])
                    result.order.append(ids[0])
        if rest.strip():
            raise GitError("unexpected git rev-list output (no final newline)")
    except (GitError, UnicodeDecodeError) as exc:
        result.complete, result.error = False, str(exc)
    finally:
        stream.close()
    return result


def attribute(new: NewCommits, tips: Sequence[tuple[str, int]]) -> dict[str, int]:
    """New commit -> the index of the ref event it belongs to: that of the nearest tip.

    ``tips`` are ``(commit, event index)`` in preference order. One breadth-first
    walk from all tips at once, so each commit is reached first from a tip with
    the fewest parent steps to it (ties: the tip earlier in ``tips``).
    """
    parents = new.parents
    owner: dict[str, int] = {}
    queue: deque[str] = deque()
    for commit, index in tips:
        if commit in parents and commit not in owner:
            owner[commit] = index
            queue.append(commit)
    while queue:
        commit = queue.popleft()
        mine = owner[commit]
        for parent in parents[commit]:
            if parent in parents and parent not in owner:
                owner[parent] = mine
                queue.append(parent)
    return owner


def reaches(new: NewCommits, tip: str, target: str, limit: int) -> bool | None:
    """Does the walk from ``tip`` through new commits step onto ``target``?

    True is certain (``target`` is an ancestor of ``tip``); ``None`` means this
    graph cannot tell (``target`` may still be reached through old history) or
    the walk took more than ``limit`` steps.
    """
    if tip == target:
        return True
    if tip not in new.parents:
        return None
    seen = {tip}
    todo = [tip]
    while todo:
        if len(seen) > limit:
            return None
        for parent in new.parents[todo.pop()]:
            if parent == target:
                return True
            if parent in new.parents and parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return None


def quotas(sizes: Sequence[int], budget: int) -> list[int]:
    """Shares of ``budget`` for lists of ``sizes``: equal, the rest going to the first lists.

    Every event gets its newest commits listed, however many events the push
    has, instead of the first events taking the whole budget.
    """
    if sum(sizes) <= budget:
        return list(sizes)
    low, high = 0, max(sizes)
    while low < high:  # the largest equal share that fits
        middle = (low + high + 1) // 2
        if sum(min(s, middle) for s in sizes) <= budget:
            low = middle
        else:
            high = middle - 1
    shares = [min(s, low) for s in sizes]
    left = budget - sum(shares)
    for i, size in enumerate(sizes):
        if left <= 0:
            break
        if size > shares[i]:
            shares[i] += 1
            left -= 1
    return shares
