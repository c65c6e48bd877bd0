"""Test-only message types for ``busgate notify``: an upload (info) and a failed build
(error), so urgency from severity is seen end to end. :func:`register` as in
:mod:`tests.tail_types`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from gateway.messages import ERROR, Message
from gateway.sources import Source

SERVICE = "notifytest"
TRACKER = "https://tracker.example.org/pkg/"


class _Upload(Message):
    body_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "required": ["user", "package", "version"],
        "properties": {"user": {"type": "string"}, "package": {"type": "string"},
                       "version": {"type": "string"}}}

    @property
    def url(self) -> str | None:
        return TRACKER + self.body["package"] + "?v=" + self.body["version"] + "&x=<1>"

    @property
    def usernames(self) -> list[str]:
        return [self.body["user"]]

    @property
    def packages(self) -> list[str]:
        return [self.body["package"]]


class UploadDone(_Upload):
    """``notifytest.upload.done`` (info)."""

    name: ClassVar[str] = "busgate.notifytest.upload.done.v1"
    topic_tokens: ClassVar[tuple[str, ...]] = (SERVICE, "upload", "done")

    @property
    def summary(self) -> str:
        return f"{self.body['user']} uploaded {self.body['package']} {self.body['version']}"


class BuildFailed(_Upload):
    """``notifytest.build.failed`` (error)."""

    name: ClassVar[str] = "busgate.notifytest.build.failed.v1"
    topic_tokens: ClassVar[tuple[str, ...]] = (SERVICE, "build", "failed")
    severity: ClassVar[int] = ERROR

    @property
    def summary(self) -> str:
        return f"{self.body['package']} {self.body['version']} failed to build"


TYPES = [UploadDone, BuildFailed]


@dataclass(frozen=True)
class NotifytestSettings:
    #: Unused: the source only declares message types.
    enabled: bool = False


SOURCE = Source(name=SERVICE, section=SERVICE, settings=NotifytestSettings,
                messages="tests.notify_types:TYPES",
                description="test-only source declaring notifytest.* message types")


def register(site: Path) -> Path:
    """A dist-info in ``site`` registering :data:`SOURCE` (put ``site`` on PYTHONPATH)."""
    info = site / "busgate_notifytest-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: busgate-notifytest\n"
                                   "Version: 0\n")
    (info / "entry_points.txt").write_text(
        f"[busgate.sources]\n{SERVICE} = tests.notify_types:SOURCE\n")
    return site
