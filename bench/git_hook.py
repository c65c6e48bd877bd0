"""What busgate's post-receive hook adds to a push's wall time.

Pushes the same thing into fresh bare repositories with and without the hook
(installed by ``busgate git-hook --install``) and prints the medians and their
difference, for a 1-commit push onto existing history and for a first push of
10,000 commits. Targets: under 150 ms and under 2 s added.

    .venv/bin/python bench/git_hook.py [--runs 7] [--big-runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from daemon_state import adopt  # bench/ is the script's directory

REPO = Path(__file__).resolve().parent.parent
BUSGATE = [sys.executable, "-m", "gateway"]


def git(env: dict[str, str], *args: str, cwd: Path, input: bytes | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, input=input, check=True,
                   capture_output=True)


def history(count: int, branch: str, start: int = 0) -> bytes:
    """A fast-import stream of ``count`` commits, each changing two files."""
    out = []
    for i in range(start, start + count):
        message = f"commit {i}\n\nSome body text for commit {i}.\n".encode()
        a, b = f"{i}\n".encode(), f"line {i}\n".encode() * 3
        out += [f"commit refs/heads/{branch}\n".encode(),
                b"committer Bench <bench@example.org> %d +0000\n" % (1_600_000_000 + i),
                b"data %d\n%s" % (len(message), message),
                b"M 100644 inline counter\ndata %d\n%s\n" % (len(a), a),
                b"M 100644 inline dir/%d.txt\ndata %d\n%s\n" % (i % 50, len(b), b)]
    return b"".join(out)


def timed_push(env: dict[str, str], work: Path, bare: Path, refspec: str) -> float:
    started = time.perf_counter()
    git(env, "push", "-q", str(bare), refspec, cwd=work)
    return time.perf_counter() - started


def fresh_bare(env: dict[str, str], root: Path, name: str) -> Path:
    bare = root / name
    git(env, "init", "-q", "--bare", str(bare), cwd=root)
    return bare


def measure(env: dict[str, str], root: Path, work: Path, runs: int, *, base: str | None,
            refspec: str, label: str) -> tuple[float, float]:
    """Median push time without and with the hook (alternating runs)."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for run in range(runs):
        for hook in (False, True):
            bare = fresh_bare(env, root, f"{label}-{run}-{int(hook)}.git")
            if base:
                git(env, "push", "-q", str(bare), base, cwd=work)  # history, not timed
            if hook:
                subprocess.run([*BUSGATE, "git-hook", "--install", str(bare)], env=env,
                               check=True, capture_output=True, cwd=REPO)
            times[hook].append(timed_push(env, work, bare, refspec))
    return statistics.median(times[False]), statistics.median(times[True])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of the 1-commit push")
    parser.add_argument("--big-runs", type=int, default=3, help="runs of the 10,000-commit push")
    parser.add_argument("--commits", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="busgate-bench-") as tmp:
        root = Path(tmp)
        (root / "gitconfig").write_text("[user]\n\tname = Bench\n\temail = b@example.org\n")
        (root / "busgate.toml").write_text(f'[state]\ndir = "{root / "var"}"\n')
        adopt(root / "busgate.toml")
        env = {**os.environ, "GIT_CONFIG_GLOBAL": str(root / "gitconfig"),
               "GIT_CONFIG_NOSYSTEM": "1", "BUSGATE_CONFIG": str(root / "busgate.toml")}
        work = root / "work"
        git(env, "init", "-q", str(work), cwd=root)
        git(env, "fast-import", "--quiet", cwd=work, input=history(args.commits, "big"))
        git(env, "fast-import", "--quiet", cwd=work, input=history(200, "base"))
        git(env, "checkout", "-q", "-b", "small", "base", cwd=work)
        (work / "one.txt").write_text("one more line\n")
        git(env, "add", "one.txt", cwd=work)
        git(env, "commit", "-q", "-m", "one commit", cwd=work)

        version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
        print(f"git {version.split()[-1]}, python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs")
        plain, hooked = measure(env, root, work, args.runs, base="base:refs/heads/main",
                                refspec="small:refs/heads/main", label="small")
        report("1-commit push (200 commits of history)", plain, hooked, 0.150, args.runs)
        plain, hooked = measure(env, root, work, args.big_runs, base=None,
                                refspec="big:refs/heads/main", label="big")
        report(f"{args.commits:,}-commit first push", plain, hooked, 2.0, args.big_runs)
        items = len(list((root / "var" / "spool" / "new").glob("*.events")))
        print(f"spool items written: {items} (expected {args.runs + args.big_runs})")
    return 0


def report(label: str, plain: float, hooked: float, target: float, runs: int) -> None:
    added = hooked - plain
    verdict = "OK" if added < target else "OVER TARGET"
    print(f"{label}: push {plain * 1000:.0f} ms without hook, {hooked * 1000:.0f} ms with; "
          f"added {added * 1000:.0f} ms (median of {runs}; target < {target * 1000:.0f} ms) "
          f"{verdict}")


if __name__ == "__main__":
    sys.exit(main())
