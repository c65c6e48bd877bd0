"""The recorder's and web API's systemd units: accepted by systemd-analyze, hardened like the
daemon's, run as the packaged user on the packaged configuration."""

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BUSGATE, REPO

UNITS = {"busgate-record.service": "busgate record", "busgate-web.service": "busgate web"}


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_is_accepted_by_systemd_analyze(tmp_path, name):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = (REPO / "contrib/systemd" / name).read_text()
    binary = shutil.which("busgate", path=str(Path(BUSGATE[0]).parent)) or "/bin/true"
    path = tmp_path / name
    path.write_text(unit.replace("/usr/bin/busgate", binary))
    result = subprocess.run([tool, "verify", "--man=no", str(path)], capture_output=True,
                            text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if name in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_runs_hardened_as_the_busgate_user(name):
    lines = set((REPO / "contrib/systemd" / name).read_text().splitlines())
    assert f"ExecStart=/usr/bin/{UNITS[name]}" in lines
    assert {"User=busgate", "Group=busgate", "StateDirectory=busgate", "ProtectSystem=strict",
            "NoNewPrivileges=true", "CapabilityBoundingSet=",
            "Environment=BUSGATE_CONFIG=/etc/busgate/busgate.toml"} <= lines
