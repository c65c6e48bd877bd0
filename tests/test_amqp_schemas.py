"""The busgate-messages schema package: fedora-messaging classes wrapping busgate's
types, and its generated entry points in sync with the registry."""

from __future__ import annotations

import os
import subprocess
import sys

import jsonschema
import pytest
from amqp_helpers import CONTRIB, write_test_types
from amqp_types import BuildType, UploadType
from conftest import REPO

pytest.importorskip("fedora_messaging")


@pytest.fixture
def busgate_messages(monkeypatch):
    monkeypatch.syspath_prepend(str(CONTRIB))
    import busgate_messages

    return busgate_messages


def check(pythonpath: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*pythonpath, str(CONTRIB), str(REPO)])}
    return subprocess.run([sys.executable, "-m", "busgate_messages", "--check"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_entry_points_in_sync_with_the_registry(tmp_path):
    """contrib/busgate_messages/setup.cfg lists exactly the registry's types; a source
    with types it does not list makes the check fail."""
    proc = check([])
    assert proc.returncode == 0, proc.stderr
    extra = write_test_types(tmp_path / "dists", fedora_messages=False)
    proc = check([str(extra), str(REPO / "tests")])
    assert proc.returncode == 1
    assert "out of date" in proc.stderr


def test_generated_entry_points(busgate_messages):
    assert busgate_messages.entry_points([UploadType, BuildType]) == {
        "busgate.amqptest.build.state.v1": "busgate_messages:busgate_amqptest_build_state_v1",
        "busgate.amqptest.package.upload.v1":
            "busgate_messages:busgate_amqptest_package_upload_v1"}

    class Clash(UploadType):
        name = "busgate.amqptest-package.upload.v1"

    with pytest.raises(ValueError, match="one attribute"):
        busgate_messages.entry_points([UploadType, Clash])


def test_wrapper_delegates_to_the_busgate_type(busgate_messages, monkeypatch):
    from fedora_messaging import message as fm

    fm.load_message_classes()
    for busgate_type in (UploadType, BuildType):  # as the entry points would register them
        wrapped = busgate_messages.wrap(busgate_type)
        monkeypatch.setitem(fm._schema_name_to_class, busgate_type.name, wrapped)
        monkeypatch.setitem(fm._class_to_schema_name, wrapped, busgate_type.name)
    cls = busgate_messages.wrap(UploadType)
    assert cls is busgate_messages.wrap(UploadType)  # one class per name
    assert issubclass(cls, fm.Message)
    msg = cls(body={"source": "hebcal", "version": "4.31-1", "by": "barak"},
              topic="org.debian.dev.amqptest.package.upload")
    assert msg.summary == "hebcal 4.31-1 uploaded by barak"
    assert msg.url == "https://tracker.example.org/hebcal"
    assert (msg.usernames, msg.packages) == (["barak"], ["hebcal"])
    msg.validate()
    with pytest.raises(jsonschema.ValidationError, match="'by' is a required property"):
        cls(body={"source": "hebcal", "version": "1"}, topic="t").validate()
    build = busgate_messages.wrap(BuildType)(
        body={"package": "dpkg", "arch": "arm64"}, topic="org.debian.dev.amqptest.build.failed")
    assert (build.summary, build.severity) == ("dpkg failed on arm64", 30)
    with pytest.raises(AttributeError, match="no busgate message type"):
        busgate_messages.__getattr__("nothing_here")
