"""Message types declared for tests (no adapter declares its own yet on this branch):
a dak-like accept with a strict schema, and a removal naming many packages."""

from __future__ import annotations

from typing import Any, ClassVar

from gateway import messages


class Accept(messages.Message):
    """An upload accepted into a suite (test type)."""

    name = "busgate.test.package.accept.v1"
    topic_tokens: ClassVar[tuple[str, ...]] = ("dak", "package", "accept")
    body_schema: ClassVar[dict[str, Any]] = {
        "title": "dak.package.accept (test)",
        "description": "An upload accepted into a suite.",
        "type": "object",
        "required": ["source", "version", "suite"],
        "properties": {
            "source": {"type": "string", "description": "Source package name."},
            "version": {"type": "string", "description": "Version."},
            "suite": {"type": "string"},
            "changed_by": {"type": "string"},
        },
    }

    @property
    def summary(self) -> str:
        b = self.body
        return messages.clip(f"{b['source']} {b['version']} accepted into {b['suite']} "
                             f"({b.get('changed_by', '?')})")

    @property
    def url(self) -> str:
        return f"https://tracker.debian.org/pkg/{self.body['source']}"

    @property
    def usernames(self) -> list[str]:
        return [self.body["changed_by"]] if "changed_by" in self.body else []

    @property
    def packages(self) -> list[str]:
        return [self.body["source"]]


class Remove(messages.Message):
    """Packages removed from the archive (test type)."""

    name = "busgate.test.package.remove.v1"
    topic_tokens: ClassVar[tuple[str, ...]] = ("dak", "package", "remove")
    severity = messages.WARNING
    body_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "required": ["sources"],
        "properties": {"sources": {"type": "array", "items": {"type": "string"}},
                       "by": {"type": "string"}},
    }

    @property
    def usernames(self) -> list[str]:
        return [self.body["by"]] if "by" in self.body else []

    @property
    def packages(self) -> list[str]:
        return list(self.body["sources"])


class Build(messages.Message):
    """A family: one type for every ``wb.build.<state>`` (test type)."""

    name = "busgate.test.build.v1"
    topic_tokens: ClassVar[tuple[str, ...]] = ("wb", "build", "*")
    body_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "required": ["package"],
        "properties": {"package": {"type": "string"}, "nested": {
            "type": "object", "properties": {"n": {"type": "integer"}}}},
    }


TYPES = [Accept, Remove, Build]
