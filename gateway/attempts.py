"""Remember which spool item the worker is ingesting, so an item that kills it is
noticed and quarantined instead of killing every restarted worker.

An exception in a parser is caught and the item quarantined at once (see
:mod:`gateway.ingest`). A death the interpreter cannot catch (a crash in C code,
the kernel's OOM killer) leaves the mark file behind, and the next worker counts
one crash against the item it names. An item at ``ingest.max_crashes`` is not
parsed again. A single ``kill -9`` of a worker is not the item's fault, which is why
the default allows one crash before quarantining.

Only a death the item may have caused is counted: the worker's own, under the daemon
that started it. Each daemon run gives its worker an ``owner`` token, written in the
mark; a mark left by another run means the daemon itself was stopped hard (kill -9,
power loss, a restart loop), which parsing in the worker cannot cause. Such an item is
ingested alone, its count unchanged, so a daemon killed twice while the same item was
in flight does not quarantine good input.

While a group of items is parsed and committed in one transaction (group commit) one
mark names the whole group: a mark per item cost as much wall time as ingesting a small
item. A death then is held against none of them: the next worker ingests each of them
alone, under its own mark, so a culprit is found as before (one death later: a poison
item in a group is quarantined after ``ingest.max_crashes`` deaths of its own, plus the
group's).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

#: The mark file in the spool directory (outside ``new/``, so never an item itself).
MARK = ".ingesting"
#: First line of a mark naming a group (no spool item name starts with a dot).
GROUP = ".group"


class Attempts:
    """One worker's view: crashes counted per item name, the mark file kept current."""

    def __init__(self, spool_root: str | os.PathLike[str], max_crashes: int, owner: str = ""):
        self.path = Path(spool_root) / MARK
        self.max_crashes = max_crashes
        #: This daemon run's token (no whitespace): a mark of another run is not counted.
        self.owner = owner
        self.crashes: dict[str, int] = {}
        #: Items of a group the last worker died committing: to be ingested one by one.
        self.suspects: set[str] = set()
        try:
            text = self.path.read_text(errors="surrogateescape")
            first, _, rest = text.partition("\n")
            if first == GROUP:
                self.suspects = {name for name in rest.split("\n") if name}
            elif rest:  # "<count>[ <owner>]\n<name>": the name last, whatever it holds
                count, _, owner = first.partition(" ")
                if owner and owner != self.owner:  # the daemon was stopped, not the worker
                    self.crashes[rest] = int(count)
                else:
                    self.crashes[rest] = int(count) + 1  # the last worker died on it
        except (OSError, ValueError, IndexError):
            pass

    def groupable(self, name: str) -> bool:
        """Whether ``name`` may share a transaction: not suspected of killing a worker
        (and a name the mark can hold unambiguously)."""
        return name not in self.crashes and name not in self.suspects and "\n" not in name

    def begin_group(self, names: list[str]) -> None:
        """Mark a group being parsed and committed together (see the module's docstring)."""
        with contextlib.suppress(OSError):
            self.path.write_text("\n".join([GROUP, *names, ""]), errors="surrogateescape")

    def end_group(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    def begin(self, name: str) -> int | None:
        """Mark ``name`` as being ingested; ``None`` when it has crashed too often,
        else the crashes counted against it so far."""
        count = self.crashes.get(name, 0)
        if count >= self.max_crashes:
            return None
        # A hint only: without it a crashing item is retried, as before.
        with contextlib.suppress(OSError):
            owner = f" {self.owner}" if self.owner else ""
            self.path.write_text(f"{count}{owner}\n{name}", errors="surrogateescape")
        return count

    def end(self, name: str) -> None:
        """``name`` is done (committed, quarantined, or left for a retry after a store error)."""
        self.crashes.pop(name, None)
        self.suspects.discard(name)
        with contextlib.suppress(OSError):
            self.path.unlink()
