"""Remember which spool item the worker is ingesting, so an item that kills it is
noticed and quarantined instead of killing every restarted worker.

An exception in a parser is caught and the item quarantined at once (see
:mod:`gateway.ingest`). A death the interpreter cannot catch (a crash in C code,
the kernel's OOM killer) leaves the mark file behind, and the next worker counts
one crash against the item it names. An item at ``ingest.max_crashes`` is not
parsed again. A single ``kill -9`` of a worker or daemon is not the item's fault,
which is why the default allows one crash before quarantining.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

#: The mark file in the spool directory (outside ``new/``, so never an item itself).
MARK = ".ingesting"


class Attempts:
    """One worker's view: crashes counted per item name, the mark file kept current."""

    def __init__(self, spool_root: str | os.PathLike[str], max_crashes: int):
        self.path = Path(spool_root) / MARK
        self.max_crashes = max_crashes
        self.crashes: dict[str, int] = {}
        try:
            name, count = self.path.read_text(errors="surrogateescape").split("\n")[:2]
            self.crashes[name] = int(count) + 1  # the last worker died ingesting it
        except (OSError, ValueError):
            pass

    def begin(self, name: str) -> int | None:
        """Mark ``name`` as being ingested; ``None`` when it has crashed too often,
        else the crashes counted against it so far."""
        count = self.crashes.get(name, 0)
        if count >= self.max_crashes:
            return None
        # A hint only: without it a crashing item is retried, as before.
        with contextlib.suppress(OSError):
            self.path.write_text(f"{name}\n{count}\n", errors="surrogateescape")
        return count

    def end(self, name: str) -> None:
        """``name`` is done (committed, quarantined, or left for a retry after a store error)."""
        self.crashes.pop(name, None)
        with contextlib.suppress(OSError):
            self.path.unlink()
