"""Health flags: what is wrong with the daemon's state right now, for ``busgate status``.

When the state database cannot be written (disk full, read-only, I/O error) the
spool worker backs off instead of crash-looping; the operator learns it from one
log line and from a flag that ``busgate status`` shows. The flag is a small file
per component in the state directory (``health.<component>.json``), because the
database itself is what fails; it is removed when the component recovers.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

PREFIX = "health."


def _path(state_dir: str | os.PathLike[str], component: str) -> Path:
    return Path(state_dir) / f"{PREFIX}{component}.json"


def read(state_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Component -> its flag (``problem``, ``since``, ``fatal``); empty when all is well."""
    flags: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(state_dir).glob(f"{PREFIX}*.json")):
        try:
            flags[path.name[len(PREFIX):-len(".json")]] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return flags


def clear_all(state_dir: str | os.PathLike[str]) -> None:
    """Forget every flag (a daemon starting afresh)."""
    for path in Path(state_dir).glob(f"{PREFIX}*.json"):
        path.unlink(missing_ok=True)


class Reporter:
    """Logs a state fault once (and its recovery once) and keeps the flag file in step."""

    def __init__(self, state_dir: str | os.PathLike[str], component: str,
                 log: logging.Logger):
        self.path = _path(state_dir, component)
        self.component = component
        self.log = log
        self.problem: str | None = None

    def fault(self, problem: str, *, retry_in: float | None = None,
              fatal: bool = False) -> None:
        if problem == self.problem and not fatal:
            self.log.debug("%s still failing: %s", self.component, problem)
            return
        self.problem = problem
        if fatal:
            self.log.critical("%s: %s; stopping (exit 69)", self.component, problem)
        else:
            self.log.error("%s: %s; backing off (retrying every %.1f s at most, input kept; "
                           "`busgate status` shows this until it recovers)", self.component,
                           problem, retry_in or 0.0)
        self._write({"problem": problem, "since": int(time.time()), "fatal": fatal,
                     "pid": os.getpid()})

    def ok(self) -> None:
        if self.problem is None:
            return
        self.log.warning("%s recovered (was: %s)", self.component, self.problem)
        self.problem = None
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            self.log.warning("cannot remove the health flag %s: %s", self.path, exc)

    def _write(self, flag: dict[str, Any]) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(flag, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk may refuse this too; the log line stays
            self.log.warning("cannot write the health flag %s: %s", self.path, exc)
            tmp.unlink(missing_ok=True)
