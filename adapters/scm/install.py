"""``busgate git-hook --install REPO``: write ``hooks/post-receive``, chaining to any old one.

The hook is a small POSIX shell script. It reads the push's stdin once, gives it
to busgate (whose exit status is ignored) and then to the previous hook, kept
as ``post-receive.busgate-chained``, whose exit status the script returns. A
hook busgate wrote earlier is recognised by its marker and rewritten in place,
so installing twice is harmless.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import BusgateError

MARKER = "# busgate-post-receive-hook"
CHAINED = "post-receive.busgate-chained"

TEMPLATE = """#!/bin/sh
{marker} (written by `busgate git-hook --install`; run it again to update)
# Hands each push to busgate, then to the previous post-receive hook, if any,
# kept beside this one as {chained}. busgate never fails a push and
# never takes longer than its time budget; its exit status is ignored.
input=$(cat; echo .)
input=${{input%.}}
printf '%s' "$input" | {command} >/dev/null
chained="$(dirname -- "$0")/{chained}"
if [ -x "$chained" ]; then
    printf '%s' "$input" | "$chained" "$@"
    exit $?
fi
exit 0
"""


class InstallError(BusgateError):
    """The hook could not be installed (not a repository, unwritable, conflicting files)."""


@dataclass(frozen=True)
class Installed:
    hook: Path
    #: The previous hook, now called from ours (``None`` if there was none).
    chained: Path | None
    #: True when an earlier busgate hook was replaced.
    updated: bool


def busgate_command() -> list[str]:
    """How the hook calls busgate: the console script if there is one, else ``python -m``."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "busgate" and argv0.is_file():
        return [str(argv0.absolute())]
    script = Path(sys.executable).parent / "busgate"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "gateway"]


def hook_command(config: str | None, repo: str | None) -> str:
    """The shell command line the hook runs (every part quoted)."""
    command = busgate_command()
    env = ""
    if command[1:2] == ["-m"]:  # not installed as a script: make the package importable
        root = Path(__file__).resolve().parent.parent.parent
        env = f"PYTHONPATH={shlex.quote(str(root))} "
    args = [*command, "git-hook"]
    if config:
        args += ["--config", str(Path(config).absolute())]
    if repo:
        args += ["--repo", repo]
    return env + " ".join(shlex.quote(a) for a in args)


def hooks_dir(repo: str | os.PathLike[str], executable: str = "git") -> Path:
    """Where git looks for this repository's hooks (honours ``core.hooksPath``)."""
    path = Path(repo)
    if not path.is_dir():
        raise InstallError(f"{path} is not a directory")
    try:
        out = subprocess.run([executable, "rev-parse", "--git-path", "hooks"], cwd=path,
                             capture_output=True, timeout=30, check=False,
                             env={k: v for k, v in os.environ.items() if not k.startswith("GIT_")})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"cannot run {executable}: {exc}") from None
    if out.returncode != 0:
        raise InstallError(f"{path} is not a git repository: "
                           f"{out.stderr.decode(errors='replace').strip()}")
    return path.absolute() / os.fsdecode(out.stdout.rstrip(b"\n"))


def install(repo: str | os.PathLike[str], *, config: str | None = None,
            name: str | None = None, executable: str = "git") -> Installed:
    """Write the hook into ``repo`` (bare or not). Raises :class:`InstallError`."""
    directory = hooks_dir(repo, executable)
    hook = directory / "post-receive"
    chained = directory / CHAINED
    updated = False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if hook.is_symlink() or hook.exists():
            if _is_ours(hook):
                updated = True
            elif chained.is_symlink() or chained.exists():
                raise InstallError(f"{hook} is not busgate's and {chained} exists too; "
                                   "merge them by hand, then run --install again")
            else:
                os.rename(hook, chained)
        _write(hook, TEMPLATE.format(marker=MARKER, chained=CHAINED,
                                     command=hook_command(config, name)))
    except OSError as exc:
        raise InstallError(f"cannot write {hook}: {exc.strerror or exc}") from None
    has_chain = chained.is_symlink() or chained.exists()
    return Installed(hook=hook, chained=chained if has_chain else None, updated=updated)


def _is_ours(hook: Path) -> bool:
    if hook.is_symlink():
        return False
    try:
        with hook.open("rb") as handle:
            return MARKER.encode() in handle.read(4096)
    except OSError:
        return False


def _write(path: Path, text: str, mode: int = 0o755) -> None:
    tmp = path.with_name(f".{path.name}.busgate-tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def describe(result: Installed) -> Sequence[str]:
    """Lines telling the operator what was done."""
    lines = [f"{'updated' if result.updated else 'installed'} {result.hook}"]
    if result.chained is not None:
        lines.append(f"chains to {result.chained} (same input; its exit status is the hook's)")
    return lines
