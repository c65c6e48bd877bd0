"""``busgate git-hook`` (the git source's command): a git post-receive hook that never
fails or slows a push.

Reads the ``<old> <new> <refname>`` lines on stdin, turns them into ``git.*``
events and hands them to the daemon as ONE spool item (or prints them with
``--dry-run``). Whatever happens it exits 0 with at most one warning line on
stderr: the refs are already updated when post-receive runs, so a failure here
can only lose a notice, never a push. A watchdog ends the process shortly
after the time budget even if a system call hangs.
"""

from __future__ import annotations

import os
import sys
import time
from types import SimpleNamespace

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import argparse

HELP = "git post-receive hook: publish the pushed ref updates (always exits 0)"

#: Largest stdin accepted (a mirror push of every ref of a huge repository fits easily).
MAX_STDIN = 64 * 1024 * 1024
#: Part of the budget kept back from git for writing the spool item.
SPOOL_RESERVE = 0.25
#: Seconds after the budget at which the watchdog ends the process regardless.
HARD_GRACE = 1.0
#: ``--install`` refused because pushes would go where no daemon reads (sysexits EX_TEMPFAIL).
EX_TEMPFAIL = 75
EX_USAGE = 2
#: More seconds the watchdog allows per ref update: handing events over takes time too.
GRACE_PER_REF = 500e-6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", metavar="NAME",
                        help="repository name in events (default: git.repo, else derived "
                             "from the repository path)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the events, one JSON object per line; store nothing")
    parser.add_argument("--install", metavar="PATH_TO_REPO",
                        help="write hooks/post-receive into this repository (chaining to an "
                             "existing hook) and exit; the hook gets --config (or "
                             "$BUSGATE_CONFIG) and --repo as given here")


def parse_fast(argv: list[str]) -> SimpleNamespace | None:
    """The options of :func:`add_arguments` as the installed hook passes them, read
    without argparse (a few milliseconds of every push); ``None`` hands the command line
    to argparse (help, ``--install``, anything unexpected)."""
    args = SimpleNamespace(config=None, repo=None, dry_run=False, install=None)
    words = iter(argv)
    for word in words:
        name, eq, value = word.partition("=")
        if word == "--dry-run":
            args.dry_run = True
        elif name in ("--config", "--repo"):
            value = value if eq else next(words, "")
            if not value or value.startswith("-"):
                return None
            setattr(args, name[2:], value)
        else:
            return None
    return args


def run(args: argparse.Namespace) -> int:
    if args.install:
        return _install(args)
    start = time.monotonic()
    try:
        return _hook(args, start)
    except BaseException as exc:  # never fail a push, whatever happened
        if isinstance(exc, SystemExit | KeyboardInterrupt):
            _warn("interrupted; push notice not sent")
        else:
            _warn(f"push notice not sent: {type(exc).__name__}: {exc}")
        return 0


def _hook(args: argparse.Namespace, start: float) -> int:
    from gateway.cli import load_settings

    settings = load_settings(args)
    budget = max(settings.git.time_budget, 0.05)
    watchdog = _watchdog(budget + HARD_GRACE - (time.monotonic() - start))

    from adapters.scm.git import Deadline, Git, GitError
    from adapters.scm.push import build_events, git_dir, pusher, repo_name
    from adapters.scm.refs import parse_lines
    from adapters.scm.text import clean

    deadline = Deadline(max(budget - min(SPOOL_RESERVE, budget / 4), 0.01), start)
    # stdin may come late on a loaded server: wait for it into the grace (the events then say
    # complete: false) rather than lose the notice
    data, stdin_problem = _read_stdin(Deadline(budget + HARD_GRACE / 4, start))
    lines = data.count(b"\n")
    if lines > 1000:  # a big push: give parsing and handing over its events their time
        watchdog.cancel()
        watchdog = _watchdog(budget + HARD_GRACE + GRACE_PER_REF * lines
                             - (time.monotonic() - start))
    updates, problems = parse_lines(data)
    if stdin_problem:
        problems.insert(0, stdin_problem)
    events = []
    if updates:
        env = os.environ
        try:
            directory = git_dir(env, settings.git.executable, max(deadline.remaining(), 0.01))
        except GitError as exc:
            _warn(f"push notice not sent: {exc}")
            return 0
        name = clean(args.repo or settings.git.repo or repo_name(directory, settings.git.repo_root))
        git = Git(directory, deadline, settings.git.executable)
        push = build_events(git, updates, repo=name, who=pusher(env, settings.git.pusher_env),
                            settings=settings.git)
        events, problems = push.events, problems + push.problems
    if events:
        if args.dry_run:
            from gateway.dryrun import print_events

            print_events(events, settings.topic_prefix)
        else:
            _deliver(settings, events)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        sent = f"{len(events)} event(s) handed over" if events else "no event"
        _warn(f"{sent}; {problems[0]}{more}")
    return 0


def _deliver(settings, events) -> None:  # type: ignore[no-untyped-def]
    import json

    # what gateway.runtime.open_spool does, without importing the store and signing modules
    # (10 ms of every push)
    from gateway.spool import Spool

    spool = Spool(settings.spool_dir)
    spool.require_mark()  # never a silent success into a spool no daemon reads
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                              check_circular=False).encode  # one encoder, not one per event
    per_item = settings.git.max_item_events
    for start in range(0, len(events), per_item):  # a big push: several items, in order
        text = "\n".join(encode(e.to_dict()) for e in events[start:start + per_item]) + "\n"
        spool.deliver("events", text.encode())


def _read_stdin(deadline) -> tuple[bytes, str | None]:  # type: ignore[no-untyped-def]
    """All of stdin, unless it is over MAX_STDIN or does not end before the deadline."""
    import selectors

    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return b"", None
    data = bytearray()
    with selectors.DefaultSelector() as selector:
        try:
            selector.register(fd, selectors.EVENT_READ)
        except (OSError, ValueError):  # a regular file cannot be selected on: just read it
            return os.read(fd, MAX_STDIN + 1)[:MAX_STDIN], None
        while True:
            left = deadline.remaining()
            if left <= 0 or not selector.select(left):
                return _whole_lines(data), "stdin did not end within the time budget"
            chunk = os.read(fd, 65536)
            if not chunk:
                return bytes(data), None
            data += chunk
            if len(data) > MAX_STDIN:
                return _whole_lines(data[:MAX_STDIN]), f"stdin over {MAX_STDIN} bytes"


def _whole_lines(data: bytes | bytearray) -> bytes:
    return bytes(data[:data.rfind(b"\n") + 1])


def _watchdog(seconds: float):  # type: ignore[no-untyped-def]
    """End the process (exit 0, one warning) if it is still running after ``seconds``."""
    import threading

    def expire() -> None:
        _warn("time budget exceeded; push notice not sent")
        os._exit(0)

    timer = threading.Timer(max(seconds, 0.01), expire)
    timer.daemon = True
    timer.start()
    return timer


def _spool_problem(config: str | None) -> str | None:
    """Why a hook installed with ``config`` would hand pushes to a spool no daemon reads."""
    from gateway.config import load
    from gateway.errors import ConfigError
    from gateway.spool import Spool

    try:
        settings = load(config)
    except ConfigError as exc:
        return f"configuration error: {exc}"
    spool = settings.spool_dir
    if not spool.is_absolute():
        return (f"the spool {spool} is a relative path: at push time it would be below each "
                "repository, where no daemon reads; give --config (or $BUSGATE_CONFIG) a "
                "configuration whose state.dir / state.spool is absolute")
    if not Spool(spool).is_marked():
        from gateway.mark import unmarked_spool_message

        return unmarked_spool_message(spool)
    return None


def _warn(message: str) -> None:
    try:
        line = " ".join(message.split())
        sys.stderr.write(f"busgate: warning: {line[:400]}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _install(args: argparse.Namespace) -> int:
    from adapters.scm.install import InstallError, describe, install
    from gateway.config import CONFIG_ENV

    # The push may run with another environment (ssh, http backend): embed the config path.
    config = args.config or os.environ.get(CONFIG_ENV) or None
    problem = _spool_problem(config)
    if problem:
        print(f"busgate: hook not installed: {problem}", file=sys.stderr)
        return EX_TEMPFAIL
    try:
        result = install(args.install, config=config, name=args.repo)
    except InstallError as exc:  # not a repository, a hook we cannot chain: usage
        print(f"busgate: {exc}", file=sys.stderr)
        return EX_USAGE
    for line in describe(result):
        print(line)
    if config is None:
        print(f"note: no --config and no ${CONFIG_ENV}: the hook uses ${CONFIG_ENV} at push "
              "time, else the built-in defaults (state in ./var below the repository)")
    return 0
