"""Run git for the hook: argument lists only, a shared deadline, bounded output.

Everything a push hands us (object ids, ref names) goes to git on stdin or as
validated hex, never through a shell; every read is bounded in bytes and time,
so a huge diff or a hung git cannot hold the push.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import BusgateError

CHUNK = 65536
#: Bytes of a failing git's stderr kept for the warning line.
STDERR_KEEP = 4096

#: Options placed before every git subcommand: no pager, paths printed verbatim.
GLOBAL_OPTIONS = ("--no-pager", "-c", "core.quotePath=false")


class GitError(BusgateError):
    """git failed, could not be started, or ran out of time."""


class GitTimeout(GitError):
    """The hook's time budget ran out while git was working."""


class Deadline:
    """A point in time shared by every step of one hook run."""

    def __init__(self, seconds: float, start: float | None = None):
        self.end = (time.monotonic() if start is None else start) + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0


@dataclass(frozen=True)
class Output:
    data: bytes
    #: True when output beyond the limit was dropped (and git was stopped).
    cut: bool


class Git:
    """git commands against one repository, all bound by one :class:`Deadline`."""

    def __init__(self, git_dir: str | os.PathLike[str], deadline: Deadline,
                 executable: str = "git"):
        self.git_dir = Path(git_dir)
        self.deadline = deadline
        self.executable = executable
        env = dict(os.environ)
        # No optional locks: a hook must not contend with the push it reports.
        env.update(GIT_DIR=str(self.git_dir), GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0")
        for name in ("GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_NAMESPACE", "GIT_PAGER"):
            env.pop(name, None)
        self.env = env

    def run(self, args: list[str], input: bytes = b"", limit: int = 1 << 20) -> Output:
        """Output of ``git args`` (at most ``limit`` bytes). Raises :class:`GitError`."""
        data = bytearray()
        cut = False
        stream = self.stream(args, input)
        try:
            for chunk in stream:
                room = limit - len(data)
                if len(chunk) > room:
                    data += chunk[:room]
                    cut = True
                    break
                data += chunk
        finally:
            stream.close()
        return Output(bytes(data), cut)

    def status(self, args: list[str]) -> int:
        """Exit status of ``git args`` (for predicates such as ``merge-base --is-ancestor``)."""
        try:
            proc = subprocess.run([self.executable, *GLOBAL_OPTIONS, *args], env=self.env,
                                  cwd=self.git_dir, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=self._timeout(args), check=False)
        except subprocess.TimeoutExpired:
            raise GitTimeout(f"git {args[0]} ran out of time") from None
        except OSError as exc:
            raise GitError(f"cannot run {self.executable}: {exc.strerror}") from None
        return proc.returncode

    def stream(self, args: list[str], input: bytes = b"") -> Iterator[bytes]:
        """Yield ``git args`` stdout in chunks while feeding ``input``; stop at the deadline.

        Closing the generator early stops git. A non-zero exit after the whole
        output was read raises :class:`GitError` with git's first stderr line.
        """
        timeout = self._timeout(args)
        try:
            proc = subprocess.Popen(
                [self.executable, *GLOBAL_OPTIONS, *args], env=self.env, cwd=self.git_dir,
                stdin=subprocess.PIPE if input else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise GitError(f"cannot run {self.executable}: {exc.strerror}") from None
        assert proc.stdout is not None and proc.stderr is not None
        errors = bytearray()
        selector = selectors.DefaultSelector()
        try:
            pending = memoryview(input)
            if input:
                assert proc.stdin is not None
                os.set_blocking(proc.stdin.fileno(), False)
                selector.register(proc.stdin, selectors.EVENT_WRITE)
            selector.register(proc.stdout, selectors.EVENT_READ)
            selector.register(proc.stderr, selectors.EVENT_READ)
            reading = 2
            while reading:
                left = self.deadline.remaining()
                if left <= 0:
                    raise GitTimeout(f"git {args[0]} ran out of time")
                for key, _ in selector.select(min(left, timeout)):
                    if key.fileobj is proc.stdin:
                        pending = _feed(proc.stdin, pending, selector)
                        continue
                    data = os.read(key.fd, CHUNK)
                    if not data:
                        selector.unregister(key.fileobj)
                        reading -= 1
                    elif key.fileobj is proc.stdout:
                        yield data
                    elif len(errors) < STDERR_KEEP:
                        errors += data
            try:
                code = proc.wait(max(self.deadline.remaining(), 0.001))
            except subprocess.TimeoutExpired:
                raise GitTimeout(f"git {args[0]} ran out of time") from None
            if code != 0:
                first = bytes(errors).decode("utf-8", "replace").strip().splitlines()
                detail = f": {first[0]}" if first else ""
                raise GitError(f"git {args[0]} exited with status {code}{detail}")
        finally:
            selector.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()

    def _timeout(self, args: list[str]) -> float:
        left = self.deadline.remaining()
        if left <= 0:
            raise GitTimeout(f"no time left for git {args[0]}")
        return left


def _feed(pipe, pending: memoryview, selector: selectors.BaseSelector) -> memoryview:  # type: ignore[no-untyped-def]
    """Write what the pipe takes now; close it when all is written (or git stopped reading)."""
    try:
        written = os.write(pipe.fileno(), pending[:CHUNK])
    except BlockingIOError:
        return pending
    except BrokenPipeError:
        written = len(pending)
    pending = pending[written:]
    if not pending:
        selector.unregister(pipe)
        with contextlib.suppress(OSError):
            pipe.close()
    return pending


def split_nul(chunks: Iterator[bytes], max_token: int) -> Iterator[bytes]:
    """NUL-separated tokens of a byte stream, each cut to ``max_token`` bytes.

    Memory stays bounded however long a token is (a 100 MB commit message costs
    ``max_token`` bytes, not 100 MB). Each chunk is split in one C call.
    """
    buffer = bytearray()
    for chunk in chunks:
        parts = chunk.split(b"\0")
        if len(parts) == 1:  # no separator: the current token goes on
            if len(buffer) < max_token:
                buffer += chunk[:max_token - len(buffer)]
            continue
        first = parts[0]
        if len(buffer) < max_token:
            buffer += first[:max_token - len(buffer)]
        yield bytes(buffer)
        for part in parts[1:-1]:
            yield part[:max_token]
        buffer = bytearray(parts[-1][:max_token])
    if buffer:
        yield bytes(buffer)
