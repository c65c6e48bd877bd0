"""Golden files: an input's expected events, compared exactly, rewritten on request.

``BUSGATE_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_*.py`` rewrites
every ``fixtures/golden/<adapter>/<name>.expected.json`` from what the code produces
now (then read ``git diff fixtures/golden`` before committing: the diff is the change
in behaviour).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import REPO

GOLDEN = REPO / "fixtures" / "golden"
REGEN = os.environ.get("BUSGATE_REGEN_GOLDEN", "") not in ("", "0")


def path(adapter: str, name: str) -> Path:
    return GOLDEN / adapter / f"{name}.expected.json"


def text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def compare(adapter: str, name: str, actual: Any) -> None:
    """``actual`` (JSON-able) equals the golden file; with BUSGATE_REGEN_GOLDEN=1 it is
    written first."""
    target = path(adapter, name)
    actual = json.loads(json.dumps(actual))
    if REGEN:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text(actual), encoding="utf-8")
    assert target.is_file(), f"{target} is missing: run with BUSGATE_REGEN_GOLDEN=1"
    expected = json.loads(target.read_text(encoding="utf-8"))
    assert actual == expected, f"{target.name}: output differs (BUSGATE_REGEN_GOLDEN=1 rewrites)"


def stale(adapter: str, names: set[str]) -> list[str]:
    """Golden files of ``adapter`` that no case writes (removed with REGEN)."""
    folder = GOLDEN / adapter
    found = {p.name.removesuffix(".expected.json"): p for p in folder.glob("*.expected.json")}
    extra = sorted(set(found) - names)
    if REGEN:
        for name in extra:
            found[name].unlink()
        return []
    return extra
