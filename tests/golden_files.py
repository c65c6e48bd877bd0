"""Golden files: an adapter's input -> the events it gives, as people and consumers see them.

``compare(path, records)`` holds ``records`` (one dict per event: topic, key, msg_id,
body, summary, url, usernames, packages, severity, schema) equal to the JSON file at
``path``. Run the golden tests with ``BUSGATE_REGEN_GOLDEN=1`` to (re)write the files
after a deliberate change, then read the diff before committing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "fixtures" / "golden"
REGEN_ENV = "BUSGATE_REGEN_GOLDEN"


def regenerating() -> bool:
    return os.environ.get(REGEN_ENV, "") == "1"


def compare(path: Path, records: list[dict[str, Any]]) -> None:
    """Assert ``records`` equal the golden file (or rewrite it under ``BUSGATE_REGEN_GOLDEN=1``)."""
    text = json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    if regenerating():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"{path.relative_to(REPO)} does not exist; write it with "
                    f"{REGEN_ENV}=1 and review it")
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert json.loads(text) == expected, f"{path.relative_to(REPO)} differs ({REGEN_ENV}=1 " \
                                         "rewrites it)"
