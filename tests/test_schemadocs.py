"""docs/schemas/ is generated from the message types (gateway.schemadocs)."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from gateway import schemadocs, sources
from tests.conftest import REPO
from tests.example_types import TYPES, Accept, Build

#: Documents no message type generates (none: every adapter declares its types, so an
#: orphan document fails the test).
HAND_WRITTEN: frozenset[str] = frozenset()


def test_the_committed_documents_equal_the_generated_ones() -> None:
    types = sources.type_index(None).types()  # the registered sources' types
    directory = REPO / "docs" / "schemas"
    found = schemadocs.differences(types, directory, strict=False)
    assert found == [], "run `python -m gateway.schemadocs`:\n" + "\n".join(found)
    generated = set(schemadocs.render(types))
    orphans = {p.name for p in directory.glob("*.json")} - generated - HAND_WRITTEN
    assert not orphans, f"documents no message type generates: {sorted(orphans)}"


def test_a_document_carries_the_types_schema_and_validates_what_the_type_does() -> None:
    files = schemadocs.render(TYPES)
    assert set(files) == {"dak.package.accept.json", "dak.package.remove.json",
                          "wb.build.json"}
    doc = json.loads(files["dak.package.accept.json"])
    assert list(doc)[:5] == ["$schema", "$id", "title", "description", "x-busgate-message"]
    assert doc["x-busgate-message"] == Accept.name
    assert doc["properties"] == Accept.body_schema["properties"]
    assert doc["description"] == "An upload accepted into a suite."
    family = json.loads(files["wb.build.json"])
    assert family["title"] == "wb.build.<event>"
    assert family["description"] == "A family: one type for every ``wb.build.<state>`` " \
                                     "(test type)."
    validator = jsonschema.Draft202012Validator(doc)
    assert validator.is_valid({"source": "a", "version": "1", "suite": "sid"})
    assert not validator.is_valid({"source": "a", "version": 1, "suite": "sid"})


def test_check_finds_missing_changed_and_orphan_documents(tmp_path) -> None:
    assert schemadocs.write(TYPES, tmp_path) == sorted(schemadocs.render(TYPES))
    assert schemadocs.differences(TYPES, tmp_path) == []
    (tmp_path / "wb.build.json").write_text("{}\n")
    (tmp_path / "dak.package.remove.json").unlink()
    (tmp_path / "old.json").write_text("{}\n")
    assert schemadocs.differences(TYPES, tmp_path) == [
        "dak.package.remove.json: missing",
        "wb.build.json: differs from its message type's schema",
        "old.json: no message type generates it",
    ]
    assert schemadocs.differences(TYPES, tmp_path, strict=False)[-1].startswith("wb.build")


def test_two_types_documented_in_one_file_are_refused() -> None:
    class Other(Build):
        name = "busgate.test.other.v1"

    with pytest.raises(ValueError, match=r"both be documented as wb\.build\.json"):
        schemadocs.render([Build, Other])


def test_the_command_writes_then_checks(tmp_path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.schemadocs", "--out",
                               str(tmp_path), "--types", "tests.example_types:TYPES", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=60)

    assert run("--check").returncode == 1  # nothing written yet: all missing
    written = run()
    assert written.returncode == 0, written.stderr
    assert len(written.stdout.splitlines()) == 3
    assert run("--check").returncode == 0
    (tmp_path / "wb.build.json").write_text("{}\n")
    check = run("--check")
    assert check.returncode == 1 and "wb.build.json: differs" in check.stderr
    assert "python -m gateway.schemadocs" in check.stderr
