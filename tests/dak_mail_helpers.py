"""Shared by the dak mail tests: fixture paths, checks against the message types, subset
matching."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.dak_mail.messages import TYPES
from gateway.event import Event
from gateway.messages import Message, TypeIndex
from tests.conftest import REPO
from tests.messages_helpers import check_events

FIXTURES = REPO / "fixtures" / "dak_mail"
INDEX = TypeIndex(TYPES)
DAK_TOPICS = ("dak.package.accept", "dak.package.new", "dak.package.reject",
              "dak.package.comment", "dak.package.remove", "dak.bug.close",
              "dak.upload.process")


def expected() -> dict[str, Any]:
    return json.loads((FIXTURES / "expected.json").read_text())


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def message_type(topic: str) -> type[Message]:
    """The type of a dak topic (``dak.package.accept``); fails for a topic without one."""
    cls = INDEX.lookup(tuple(topic.split(".")))
    assert cls is not Message, f"{topic} has no message type"
    return cls


def short_topic(event: Event) -> str:
    return ".".join(event.topic_tokens())


def check_schema(event: Event) -> None:
    """The body survives JSON and validates against its message type."""
    check_events([event], INDEX)


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
