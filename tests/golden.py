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

import pytest

from tests.conftest import REPO

GOLDEN = REPO / "fixtures" / "golden"
REGEN_ENV = "BUSGATE_REGEN_GOLDEN"


def regenerating() -> bool:
    """Read at each call, so a test can set or clear the variable."""
    return os.environ.get(REGEN_ENV, "") not in ("", "0")


def path(adapter: str, name: str) -> Path:
    return GOLDEN / adapter / f"{name}.expected.json"


def text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def compare(adapter: str, name: str, actual: Any) -> None:
    """``actual`` (JSON-able) equals ``fixtures/golden/<adapter>/<name>.expected.json``."""
    compare_file(path(adapter, name), actual)


def compare_file(target: Path, actual: Any) -> None:
    """``actual`` (JSON-able) equals the golden file ``target``; with
    BUSGATE_REGEN_GOLDEN=1 it is written first. A missing file fails the test."""
    actual = json.loads(json.dumps(actual))
    if regenerating():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text(actual), encoding="utf-8")
    if not target.is_file():
        pytest.fail(f"{target} is missing: write it with {REGEN_ENV}=1 and review it")
    expected = json.loads(target.read_text(encoding="utf-8"))
    assert actual == expected, f"{target.name}: output differs ({REGEN_ENV}=1 rewrites it)"


def stale(adapter: str, names: set[str]) -> list[str]:
    """Golden files of ``adapter`` that no case writes (removed with REGEN)."""
    folder = GOLDEN / adapter
    found = {p.name.removesuffix(".expected.json"): p for p in folder.glob("*.expected.json")}
    extra = sorted(set(found) - names)
    if regenerating():
        for name in extra:
            found[name].unlink()
        return []
    return extra
