"""Shared by the dak mail tests: fixture paths, schema validation, subset matching."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from gateway.event import Event
from tests.conftest import REPO

FIXTURES = REPO / "fixtures" / "dak_mail"
SCHEMAS = REPO / "docs" / "schemas"
DAK_TOPICS = ("dak.package.accept", "dak.package.new", "dak.package.reject",
              "dak.package.comment", "dak.package.remove", "dak.bug.close",
              "dak.upload.process")


def expected() -> dict[str, Any]:
    return json.loads((FIXTURES / "expected.json").read_text())


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@cache
def validator(topic: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{topic}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def short_topic(event: Event) -> str:
    return ".".join(event.topic_tokens())


def check_schema(event: Event) -> None:
    """The body validates against ``docs/schemas/<topic>.json`` and survives JSON."""
    body = json.loads(json.dumps(event.body))
    errors = sorted(validator(short_topic(event)).iter_errors(body), key=str)
    assert not errors, f"{short_topic(event)}: " + "; ".join(e.message for e in errors[:5])


def assert_subset(actual: Any, wanted: Any, path: str = "body") -> None:
    if isinstance(wanted, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        for key, value in wanted.items():
            if key == "files_count":
                assert len(actual["files"]) == value, f"{path}.files"
                continue
            assert key in actual, f"{path}.{key} missing"
            assert_subset(actual[key], value, f"{path}.{key}")
    else:
        assert actual == wanted, f"{path}: {actual!r} != {wanted!r}"


def sample_dir() -> Path:
    from tests.conftest import SHARED

    return SHARED / "samples"
