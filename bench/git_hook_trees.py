"""The git hook's cost in two (or more) checkouts, side by side on one loaded machine.

A 1-commit push onto 200 commits of history, into fresh bare repositories: without a
hook, and with the hook installed by each checkout's own ``.venv`` (``busgate git-hook
--install``), runs interleaved and their order rotated so that load hits each alike.
Prints the median wall time and the median CPU time (user + system of the push and
everything it ran, the hook included, from ``wait4``): on a busy machine the CPU time
is the figure that compares.

    .venv/bin/python bench/git_hook_trees.py /work/main . [--runs 21]
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
from git_hook import fresh_bare, git, history


def push(env: dict[str, str], work: Path, bare: Path, refspec: str) -> tuple[float, float]:
    """(wall, cpu) seconds of one push, hooks included."""
    started = time.perf_counter()
    proc = subprocess.Popen(["git", "push", "-q", str(bare), refspec], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"git push failed into {bare}")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="checkouts, each with a .venv")
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    trees = {str(t): t.resolve() for t in args.trees}
    with tempfile.TemporaryDirectory(prefix="busgate-bench-") as tmp:
        root = Path(tmp)
        (root / "gitconfig").write_text("[user]\n\tname = Bench\n\temail = b@example.org\n")
        (root / "busgate.toml").write_text(f'[state]\ndir = "{root / "var"}"\n')
        adopt(root / "busgate.toml")
        env = {**os.environ, "GIT_CONFIG_GLOBAL": str(root / "gitconfig"),
               "GIT_CONFIG_NOSYSTEM": "1", "BUSGATE_CONFIG": str(root / "busgate.toml")}
        work = root / "work"
        git(env, "init", "-q", str(work), cwd=root)
        git(env, "fast-import", "--quiet", cwd=work, input=history(200, "base"))
        git(env, "checkout", "-q", "-b", "small", "base", cwd=work)
        (work / "one.txt").write_text("one more line\n")
        git(env, "add", "one.txt", cwd=work)
        git(env, "commit", "-q", "-m", "one commit", cwd=work)
        variants = ["(no hook)", *trees]
        times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
        for run in range(args.runs):
            shift = run % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                bare = fresh_bare(env, root, f"{len(times[variant])}-{variants.index(variant)}.git")
                git(env, "push", "-q", str(bare), "base:refs/heads/main", cwd=work)
                if variant in trees:
                    tree = trees[variant]
                    subprocess.run([str(tree / ".venv" / "bin" / "python"), "-m", "gateway",
                                    "git-hook", "--install", str(bare)], env=env, check=True,
                                   capture_output=True, cwd=tree)
                times[variant].append(push(env, work, bare, "small:refs/heads/main"))
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.1f}, {args.runs} runs each")
        plain = [statistics.median(t[i] for t in times["(no hook)"]) for i in (0, 1)]
        for variant in variants:
            wall, cpu = (statistics.median(t[i] for t in times[variant]) for i in (0, 1))
            print(f"{variant}: wall {wall * 1000:.1f} ms (+{(wall - plain[0]) * 1000:.1f}), "
                  f"cpu {cpu * 1000:.1f} ms (+{(cpu - plain[1]) * 1000:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
