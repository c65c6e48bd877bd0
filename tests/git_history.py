"""A generated repository with the shape of a real package's history, as a fast-import stream.

A main line with side branches merged back, release tags (mostly annotated, some
lightweight) whose names do not sort in release order, extra branches (some
with commits of their own, one with an unrelated root, like pristine-tar), and
authors as old repositories have them: one whose name is raw Latin-1 bytes
without an encoding header, one in UTF-8. ``git fast-import`` turns it into a
repository in about a second for 15,000 commits, so tests and the bench can
make their own instead of shipping one.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

LATIN1_AUTHOR = b"H\xe5vard Latin"  # "Håvard" in Latin-1, as old commits carry it
LATIN1_NAME = "Håvard Latin"
UTF8_AUTHOR = "Håvard Utf".encode()
EPOCH = 1_100_000_000


@dataclass
class History:
    """The stream and what it holds, to check events against."""

    stream: bytes
    commits: int
    merges: int
    tags: list[str] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)
    #: mark of the commit authored by :data:`LATIN1_AUTHOR`
    latin1_mark: int = 0


def history(commits: int, tags: int, merges: int, branches: int = 4,
            side_length: int = 3) -> History:
    """A fast-import stream of ``commits`` commits in all (``merges`` of them merges)."""
    out: list[bytes] = []
    mark = 0
    time = EPOCH

    def commit(ref: str, parents: list[int], message: str, path: str,
               author: bytes = b"Dev Eloper") -> int:
        nonlocal mark, time
        mark += 1
        time += 60
        text = f"{message}\n\nWhy: generated commit {mark}.\n".encode()
        data = f"{mark}\n".encode()
        out.append(f"commit {ref}\nmark :{mark}\n".encode())
        out.append(b"author %s <dev%d@example.org> %d +0100\n" % (author, mark % 7, time))
        out.append(b"committer Dev Eloper <dev@example.org> %d +0000\n" % time)
        out.append(b"data %d\n%s" % (len(text), text))
        if parents:
            out.append(f"from :{parents[0]}\n".encode())
            out.extend(f"merge :{p}\n".encode() for p in parents[1:])
        out.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
        return mark

    result = History(stream=b"", commits=commits, merges=merges)
    own_branches = max(branches, 1)
    # commits on the main line, after side branches, merges and extra branches are counted
    side_commits = merges * side_length
    extra = own_branches * 2
    main_count = commits - side_commits - extra
    if main_count < max(tags, merges * 2, 10):
        raise ValueError("too few commits for that many tags and merges")
    merge_every = main_count // max(merges, 1) if merges else 0
    tag_every = max(main_count // max(tags, 1), 1)
    main: list[int] = []
    for i in range(main_count):
        author = LATIN1_AUTHOR if i == 7 else UTF8_AUTHOR if i == 8 else b"Dev Eloper"
        if merges and i and i % merge_every == 0 and len(main) > 3 \
                and (i // merge_every) <= merges:
            fork = main[-3]
            side = fork
            number = i // merge_every
            for s in range(side_length):
                side = commit("refs/heads/side", [side], f"side {number}.{s}",
                              f"side/{number}.txt")
            tip = commit("refs/heads/main", [main[-1], side], f"Merge side {number}",
                         f"merge/{number % 50}.txt")
        else:
            tip = commit("refs/heads/main", [main[-1]] if main else [],
                         f"change {i}", f"src/file{i % 200}.c", author)
        if i == 7:
            result.latin1_mark = tip
        main.append(tip)
    for i in range(1, tags + 1):  # names sort as text, not by release: 1.10 before 1.2
        target = main[min(i * tag_every, main_count) - 1]
        name = f"debian/1.{i}-1"
        result.tags.append(name)
        if i % 5 == 0:
            out.append(f"reset refs/tags/{name}\nfrom :{target}\n\n".encode())
            continue
        message = f"Release 1.{i}-1\n".encode()
        out.append(f"tag {name}\nfrom :{target}\n".encode())
        out.append(b"tagger Dev Eloper <dev@example.org> %d +0000\n" % (EPOCH + target * 60))
        out.append(b"data %d\n%s\n" % (len(message), message))
    for b in range(own_branches):
        name = f"topic-{b}"
        base = main[(b * 97) % main_count]
        if b == 0:  # an unrelated root, like pristine-tar
            first = commit(f"refs/heads/{name}", [], f"{name} root", f"{name}.delta")
        else:
            first = commit(f"refs/heads/{name}", [base], f"{name} one", f"{name}.txt")
        commit(f"refs/heads/{name}", [first], f"{name} two", f"{name}.txt")
        result.branches.append(name)
    if merges:  # one side branch, reused for every merge (the last one stays)
        result.branches.append("side")
    result.branches.append("main")
    result.stream = b"".join(out)
    result.commits = mark
    return result


def make_repository(path: Path, spec: History, env: dict[str, str] | None = None) -> Path:
    """A non-bare repository at ``path`` holding ``spec`` (nothing checked out)."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env,
                   capture_output=True, timeout=60)
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=spec.stream, check=True,
                   env=env, capture_output=True, timeout=300)
    return path
