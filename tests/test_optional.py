"""Features whose library a distribution lacks or ships too old fail with one line naming
what to install (Debian 12: no pysequoia, irc 8.5, aiormq 6.4)."""

import subprocess
from importlib import metadata

import pytest
from conftest import BUSGATE, REPO

from gateway import optional
from gateway.errors import ConfigError


def fake_versions(monkeypatch, versions):
    real = metadata.version

    def version(dist):
        if dist in versions:
            if versions[dist] is None:
                raise metadata.PackageNotFoundError(dist)
            return versions[dist]
        return real(dist)

    monkeypatch.setattr(metadata, "version", version)


@pytest.mark.parametrize(("dist", "version", "says"), [
    ("irc", "8.5.3", "irc, which is 8.5.3, older than the 20.4 busgate needs"),
    ("aiormq", "6.4.2", "aiormq, which is 6.4.2, older than the 6.8 busgate needs"),
    ("pysequoia", None, "pysequoia, which is not installed: pip install 'pysequoia>=0.1.30'"),
    ("starlette", "0.25.0", "starlette, which is 0.25.0, older than the 0.26 busgate needs"),
])
def test_a_missing_or_old_library_is_one_clear_configuration_error(monkeypatch, dist, version,
                                                                   says):
    fake_versions(monkeypatch, {dist: version})
    with pytest.raises(ConfigError, match="needs the Python package") as caught:
        optional.require(dist, "the feature")
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_recent_enough_library_is_imported(monkeypatch):
    fake_versions(monkeypatch, {"irc": "20.4.1"})
    assert optional.require("irc", "busgate irc").__name__ == "irc"
    assert optional._version_tuple("6.10.0+dfsg") > optional._version_tuple("6.8")


def test_busgate_irc_with_debians_old_irc_exits_2_with_the_line(tmp_path):
    # A stand-in "irc" distribution of version 8.5 first on sys.path, as Debian 12 has.
    site = tmp_path / "site"
    (site / "irc-8.5.3.dist-info").mkdir(parents=True)
    (site / "irc-8.5.3.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: irc\nVersion: 8.5.3\n")
    config = tmp_path / "busgate.toml"
    config.write_text(f'[state]\ndir = "{tmp_path}/var"\n[irc]\nchannels = ["#x"]\n')
    out = subprocess.run([*BUSGATE, "irc", "--config", str(config), "--timeout", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "busgate: configuration error: busgate irc needs the Python package irc, which is "
        "8.5.3, older than the 20.4 busgate needs: pip install 'irc>=20.4' (Debian 12's "
        "python3-irc 8.5 is too old)"]
