"""The post-receive hook on a whole repository pushed at once, against an older busgate.

Generates a history (default 15,000 commits, 400 tags, 140 merges, a few
branches; tests/git_history.py) and pushes every branch and tag in ONE push
into fresh bare repositories: without a hook, with this tree's hook, and with
the hook of a baseline revision (default: round one's, one ``git log`` per ref), its
code taken by ``git archive`` into a temp dir. Runs alternate. Prints the
median push times, the time each hook adds, the hook's own run time (the same
post-receive input replayed straight into it, wall and CPU time) and what its events say: how
many are complete, and how many commit entries they count for how many
distinct new commits. Target: under the 2 s budget with every event complete.

    .venv/bin/python bench/git_big_push.py [--runs 3] [--baseline REV] [--commits 15000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.daemon_state import adopt  # noqa: E402
from tests.git_history import history, make_repository  # noqa: E402

ALL_REFS = ("refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*")
HOOK = """#!/bin/sh
PYTHONPATH={path} exec {python} -m gateway git-hook --config {config} >/dev/null
"""


def git(*args: str, cwd: Path, env: dict[str, str], input: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], cwd=cwd, env=env, input=input, check=True,
                          capture_output=True).stdout


def baseline_tree(rev: str, into: Path) -> str:
    """This repository's code at ``rev`` unpacked in ``into``; returns the short id."""
    short = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "gateway", "adapters"],
                             cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return short


class Variant:
    """One hook: which code, its config and spool."""

    def __init__(self, name: str, code: Path | None, root: Path):
        self.name = name
        self.code = code
        self.state = root / f"var-{name}"
        self.config = root / f"{name}.toml"
        self.config.write_text(f'[state]\ndir = "{self.state}"\n')
        adopt(self.config)  # round one's hook does not look at the mark; this one does
        self.times: list[float] = []
        self.hook_times: list[float] = []
        #: user + system CPU seconds of the hook and its git processes (load hardly moves it)
        self.hook_cpu: list[float] = []
        self.stats: list[tuple[int, int, int, int]] = []

    def install(self, bare: Path) -> None:
        if self.code is None:
            return
        hook = bare / "hooks" / "post-receive"
        hook.write_text(HOOK.format(path=self.code, python=sys.executable, config=self.config))
        hook.chmod(0o755)

    def take(self) -> tuple[int, int, int, int]:
        """(events, complete events, commit entries counted, distinct commits listed)."""
        bodies = []
        for item in sorted((self.state / "spool" / "new").glob("*.events")):
            bodies += [json.loads(line)["body"] for line in item.read_bytes().splitlines()]
            item.unlink()
        counted = sum(b["total_commits"] or 0 for b in bodies)
        distinct = len({c["id"] for b in bodies for c in b["commits"]})
        return len(bodies), sum(bool(b["complete"]) for b in bodies), counted, distinct


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


#: The last revision with round one's hook (one ``git log`` per ref), for "before".
ROUND_ONE = "f5b78b3"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", default=ROUND_ONE,
                        help="revision to compare with (default: round one's hook, "
                             "one git log per ref)")
    parser.add_argument("--commits", type=int, default=15_000)
    parser.add_argument("--tags", type=int, default=400)
    parser.add_argument("--merges", type=int, default=140)
    args = parser.parse_args()
    rev = args.baseline
    with tempfile.TemporaryDirectory(prefix="busgate-bench-") as tmp:
        root = Path(tmp)
        (root / "gitconfig").write_text("[user]\n\tname = Bench\n\temail = b@example.org\n")
        env = {**os.environ, "GIT_CONFIG_GLOBAL": str(root / "gitconfig"),
               "GIT_CONFIG_NOSYSTEM": "1"}
        env.pop("BUSGATE_CONFIG", None)
        (root / "old").mkdir()
        short = baseline_tree(rev, root / "old")
        started = time.monotonic()
        spec = history(args.commits, args.tags, args.merges)
        work = make_repository(root / "work", spec, env)
        refs = len(git("for-each-ref", cwd=work, env=env).splitlines())
        print(f"git {git('--version', cwd=root, env=env).split()[-1].decode()}, python "
              f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.1f}; generated {spec.commits:,} commits, {spec.merges} "
              f"merges, {refs} refs in {time.monotonic() - started:.1f} s")
        variants = [Variant("none", None, root), Variant("this", REPO, root),
                    Variant(f"baseline-{short}", root / "old", root)]
        stdin = b""
        for run in range(args.runs):
            for variant in variants:
                bare = root / f"{variant.name}-{run}.git"
                git("init", "-q", "--bare", str(bare), cwd=root, env=env)
                variant.install(bare)
                started = time.perf_counter()
                git("push", "-q", str(bare), *ALL_REFS, cwd=work, env=env)
                variant.times.append(time.perf_counter() - started)
                if variant.code is not None:
                    variant.stats.append(variant.take())
                stdin = b"".join(b"0" * 40 + b" " + line + b"\n" for line in git(
                    "for-each-ref", "--format=%(objectname) %(refname)", cwd=bare,
                    env=env).splitlines())
            for variant in variants[1:]:  # the hook alone, on the same post-receive input
                bare = root / f"none-{run}.git"
                hook_env = {**env, "GIT_DIR": str(bare), "PYTHONPATH": str(variant.code)}
                started, cpu = time.perf_counter(), children_cpu()
                subprocess.run([sys.executable, "-m", "gateway", "git-hook", "--config",
                                str(variant.config)], input=stdin, env=hook_env, check=True,
                               capture_output=True, cwd=root)
                variant.hook_times.append(time.perf_counter() - started)
                variant.hook_cpu.append(children_cpu() - cpu)
                variant.take()
        plain = statistics.median(variants[0].times)
        print(f"one push of every ref ({refs} refs, {spec.commits:,} new commits), median of "
              f"{args.runs}: {plain:.2f} s without a hook")
        for variant in variants[1:]:
            with_hook = statistics.median(variant.times)
            alone = statistics.median(variant.hook_times)
            events, complete, counted, distinct = variant.stats[-1]
            verdict = "OK" if complete == events == refs and alone < 2.0 else "NOT MET"
            print(f"  {variant.name:>18}: push {with_hook:.2f} s, adds "
                  f"{with_hook - plain:+.2f} s; hook alone {alone:.2f} s wall, "
                  f"{statistics.median(variant.hook_cpu):.2f} s CPU; {complete}/{events} "
                  f"events complete; {counted:,} commit entries counted "
                  f"for {spec.commits:,} new commits ({distinct:,} described); target {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
