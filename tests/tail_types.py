"""A test-only message type and source, for ``busgate tail`` and the fedmsg.meta processor.

Tests use :data:`TYPES` directly (``TypeIndex(TYPES)``) or register :data:`SOURCE`
through the real registry: :func:`register` writes a dist-info with a
``busgate.sources`` entry point into a directory that goes on ``PYTHONPATH``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from gateway.messages import Message
from gateway.sources import Source

SERVICE = "tailtest"
TRACKER = "https://tracker.example.org/pkg/"


class UploadDone(Message):
    """``tailtest.upload.done``: ``{"user", "package", "version"}``, and optionally more
    ``uploaders`` (so a message can name more users than the headers hold)."""

    name: ClassVar[str] = "busgate.tailtest.upload.done.v1"
    topic_tokens: ClassVar[tuple[str, ...]] = (SERVICE, "upload", "done")
    body_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["user", "package", "version"],
        "properties": {
            "user": {"type": "string"},
            "package": {"type": "string"},
            "version": {"type": "string"},
            "uploaders": {"type": "array", "items": {"type": "string"}},
        },
    }

    @property
    def summary(self) -> str:
        body = self.body
        return f"{body['user']} uploaded {body['package']} {body['version']}"

    @property
    def url(self) -> str | None:
        return TRACKER + self.body["package"]

    @property
    def usernames(self) -> list[str]:
        return [self.body["user"], *self.body.get("uploaders", [])]

    @property
    def packages(self) -> list[str]:
        return [self.body["package"]]


TYPES = [UploadDone]


@dataclass(frozen=True)
class TailtestSettings:
    #: Unused: the source only declares message types.
    enabled: bool = False


SOURCE = Source(name=SERVICE, section=SERVICE, settings=TailtestSettings,
                messages="tests.tail_types:TYPES",
                description="test-only source declaring tailtest.* message types")


def register(site: Path) -> Path:
    """A dist-info in ``site`` registering :data:`SOURCE`; put ``site`` and the repository
    on ``PYTHONPATH`` of the process that should see it."""
    info = site / "busgate_tailtest-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: busgate-tailtest\n"
                                   "Version: 0\n")
    (info / "entry_points.txt").write_text(
        f"[busgate.sources]\n{SERVICE} = tests.tail_types:SOURCE\n")
    return site
