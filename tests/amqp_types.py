"""A small source with message types, registered only by the AMQP tests (a dist-info
on sys.path / PYTHONPATH), so the schema package and the stock fedora-messaging
consumer are exercised whatever types busgate's own adapters have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from gateway.messages import WARNING, Message
from gateway.sources import Source


class UploadType(Message):
    """A package upload."""

    name = "busgate.amqptest.package.upload.v1"
    topic_tokens = ("amqptest", "package", "upload")
    body_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "required": ["source", "version", "by"],
        "properties": {"source": {"type": "string"}, "version": {"type": "string"},
                       "by": {"type": "string"}}}

    @property
    def summary(self) -> str:
        return f"{self.body['source']} {self.body['version']} uploaded by {self.body['by']}"

    @property
    def url(self) -> str:
        return f"https://tracker.example.org/{self.body['source']}"

    @property
    def usernames(self) -> list[str]:
        return [self.body["by"]]

    @property
    def packages(self) -> list[str]:
        return [self.body["source"]]


class BuildType(Message):
    """A build in any state (a family of topics)."""

    name = "busgate.amqptest.build.state.v1"
    topic_tokens = ("amqptest", "build", "*")
    severity = WARNING
    body_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "required": ["package", "arch"],
        "properties": {"package": {"type": "string"}, "arch": {"type": "string"}}}

    @property
    def summary(self) -> str:
        state = self.topic.rsplit(".", 1)[-1]
        return f"{self.body['package']} {state} on {self.body['arch']}"

    @property
    def packages(self) -> list[str]:
        return [self.body["package"]]


TYPES = [UploadType, BuildType]


@dataclass(frozen=True)
class AmqpTestSettings:
    enabled: bool = False


SOURCE = Source(name="amqptest", section="amqptest", settings=AmqpTestSettings,
                messages="amqp_types:TYPES", description="AMQP test types")
