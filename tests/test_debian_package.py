"""The Debian package end to end, with real dpkg, lintian, apt and a real MTA-pipe user.

Builds busgate_<version>_all.deb from a copy of this tree, checks lintian reports no
error, installs it with apt-get from Debian's archive, checks the user, directories and
units, starts `busgate run` as user busgate with start-stop-daemon (no systemd here),
pipes a dak mail through /usr/bin/busgate as another member of group busgate (what the
MTA's user is once added), sees the event on a ZeroMQ SUB, then purges the package.

Slow, root only and it changes the machine (a package, the users busgate and one for
the MTA): it runs when CI=true or BUSGATE_PACKAGE_TEST=1, where a missing tool fails it.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import IN_CI, REPO, free_port

pytestmark = pytest.mark.slow

ENABLED = IN_CI or os.environ.get("BUSGATE_PACKAGE_TEST") == "1"
TOOLS = ("dpkg-buildpackage", "lintian", "apt-get", "dpkg-query", "start-stop-daemon",
         "runuser", "setpriv", "useradd", "userdel", "fakeroot", "dh", "dh_python3")
#: Debian's own tools and python3 only: a venv or pyenv first on PATH breaks pybuild.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MTA_USER = "busgate-mta-test"
PIDFILE = Path("/run/busgate-package-test.pid")
DROP_IN = Path("/etc/busgate/conf.d/package-test.toml")
MAIL = REPO / "fixtures/dak_mail/accepted-uploader.eml"
UNITS = ("busgate.service", "busgate-record.service", "busgate-web.service",
         "busgate-irc.service")


def need_tools() -> None:
    if not ENABLED:
        pytest.skip("builds, installs and purges the Debian package as root: run with "
                    "BUSGATE_PACKAGE_TEST=1 (always run when CI=true)")
    missing = [tool for tool in TOOLS if shutil.which(tool, path=SYSTEM_PATH) is None]
    problem = None
    if missing:
        problem = (f"{', '.join(missing)} missing (apt-get install debhelper dh-python "
                   "pybuild-plugin-pyproject python3-all lintian dpkg-dev fakeroot)")
    elif os.geteuid() != 0:
        problem = "the package test installs a package and must run as root"
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true and {problem}")
        pytest.skip(problem)


def run(*argv: str, timeout: float = 120, check: bool = True,
        **kwargs) -> subprocess.CompletedProcess:
    env = {"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
           **kwargs.pop("env", {})}
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                            env=env, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def build(tmp_path: Path) -> tuple[Path, float]:
    """busgate_*.deb built from a copy of this tree (no .venv, .git or build leftovers)."""
    source = tmp_path / "busgate"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "*.egg-info", "__pycache__", ".pytest_cache", ".pybuild", "var"))
    started = time.monotonic()
    run("dpkg-buildpackage", "-us", "-uc", "-b", cwd=source, timeout=300)
    seconds = time.monotonic() - started
    debs = sorted(tmp_path.glob("busgate_*_all.deb"))
    assert len(debs) == 1, list(tmp_path.iterdir())
    return debs[0], seconds


def start_lintian(deb: Path, out: Path) -> subprocess.Popen[bytes]:
    """lintian on the .deb, started at once: it reads only that file, so its ~10 s (more
    under load) overlap the install and the checks of the installed package. Its stdout
    (the tags) goes to ``out``, its stderr to ``out`` + ``.err``."""
    env = {"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8"}
    with out.open("wb") as sink, out.with_suffix(".err").open("wb") as errors:
        return subprocess.Popen(["lintian", "--no-tag-display-limit", str(deb)], env=env,
                                stdout=sink, stderr=errors)


def lintian_tags(lintian: subprocess.Popen[bytes], out: Path) -> list[str]:
    """The tags lintian reported; fails when one is an error (E:)."""
    lintian.wait(timeout=180)
    tags = out.read_text(errors="replace").splitlines()
    assert not [t for t in tags if t.startswith("E:")], \
        out.read_text(errors="replace") + out.with_suffix(".err").read_text(errors="replace")
    return tags


def known_to_dpkg() -> bool:
    """Whether dpkg has busgate in any state (installed, or its conffiles left)."""
    status = run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "busgate", check=False)
    return status.returncode == 0 and not status.stdout.startswith("un")


def mode_owner(path: str) -> tuple[int, str, str]:
    info = os.stat(path)
    return (stat.S_IMODE(info.st_mode), pwd.getpwuid(info.st_uid).pw_name,
            grp.getgrgid(info.st_gid).gr_name)


def receive_topic(endpoint: str, wanted: str, trigger, timeout: float) -> dict:
    """The first message on ``wanted`` at ``endpoint``; ``trigger()`` is called once the
    daemon's heartbeat shows the SUB is connected (nothing sent before is missed)."""
    import zmq

    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    deadline = time.monotonic() + timeout
    triggered = False
    try:
        while time.monotonic() < deadline:
            if not sub.poll(500):
                continue
            frames = sub.recv_multipart()
            topic = frames[0].decode()
            if topic.endswith(".busgate.publisher.heartbeat") and not triggered:
                trigger()
                triggered = True
            elif topic == wanted:
                return json.loads(frames[1])
        raise AssertionError(f"no {wanted} on {endpoint} within {timeout} s "
                             f"(daemon up: {triggered})")
    finally:
        sub.close()


def check_web() -> None:
    """``busgate web`` as user busgate answers /healthz, or (Debian 12's starlette 0.26 and
    uvicorn 0.17) exits 2 with one line naming what to install."""
    import urllib.request

    versions = run("/usr/bin/python3", "-c", "from gateway import optional; "
                   "print(optional.problem('starlette') or optional.problem('uvicorn') or '')")
    if versions.stdout.strip():
        web = run("runuser", "-u", "busgate", "--", "/usr/bin/busgate", "web", "--config",
                  "/etc/busgate/busgate.toml", check=False, timeout=60)
        assert web.returncode == 2 and "busgate web needs the Python package" in web.stderr
        assert len(web.stderr.strip().splitlines()) == 1, web.stderr
        return
    port = free_port()
    web = subprocess.Popen(
        ["setpriv", "--reuid", "busgate", "--regid", "busgate", "--init-groups", "--",
         "/usr/bin/busgate", "web", "--config", "/etc/busgate/busgate.toml", "--port",
         str(port)], env={"PATH": SYSTEM_PATH, "HOME": "/var/lib/busgate"}, cwd="/",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                            timeout=5) as answer:
                    assert json.loads(answer.read())["status"] == "ok"
                    return
            except OSError:
                if web.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"busgate web: {web.communicate()}") from None
                time.sleep(0.2)  # polling a port that is not open yet: nothing to await
    finally:
        web.terminate()
        web.communicate(timeout=20)


def stop_daemon() -> None:
    if PIDFILE.exists():
        run("start-stop-daemon", "--stop", "--pidfile", str(PIDFILE), "--retry",
            "TERM/20/KILL/5", "--remove-pidfile", check=False, timeout=40)


def test_package_builds_installs_carries_a_mail_to_the_bus_and_purges(tmp_path):
    need_tools()
    deb, build_seconds = build(tmp_path)
    lintian_out = tmp_path / "lintian.out"
    lintian = start_lintian(deb, lintian_out)

    log = tmp_path / "daemon.log"
    try:
        if known_to_dpkg():  # a failed run's leftovers (apt-get takes ~4 s to say "none")
            run("apt-get", "purge", "-y", "busgate", check=False, timeout=120)
        run("apt-get", "install", "-y", "--no-install-recommends", str(deb), timeout=300)
        # The user, its directories and what the package put in place.
        assert pwd.getpwnam("busgate").pw_dir == "/var/lib/busgate"
        assert pwd.getpwnam("busgate").pw_uid < 1000 and grp.getgrnam("busgate")
        for path in ("/var/lib/busgate", "/var/spool/busgate"):
            assert mode_owner(path) == (0o2770, "busgate", "busgate"), path
        for unit in UNITS:
            assert Path("/lib/systemd/system", unit).is_file(), unit
        conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "busgate").stdout
        assert "/etc/busgate/busgate.toml" in conffiles
        packaged = Path("/etc/busgate/busgate.toml").read_text()
        assert 'dir = "/var/lib/busgate"' in packaged
        assert 'spool = "/var/spool/busgate"' in packaged
        version = run("/usr/bin/busgate", "--version").stdout.split()[-1]
        assert deb.name == f"busgate_{version}-1_all.deb"
        assert Path("/usr/share/doc/busgate/README.md").is_file()  # the units' Documentation=
        if (REPO / "gateway/docgen.py").exists():
            pages = {p.name for p in Path("/usr/share/man/man1").glob("busgate*.1.gz")}
            assert {"busgate.1.gz", "busgate-run.1.gz", "busgate-mail.1.gz"} <= pages, pages
            completion = Path("/usr/share/bash-completion/completions/busgate").read_text()
            assert "check-config" in completion

        # This run's ports, and the unsigned fixture mail accepted, in a drop-in.
        publish = f"tcp://127.0.0.1:{free_port()}"
        DROP_IN.parent.mkdir(exist_ok=True)
        DROP_IN.write_text(f'[zmq]\npublish = "{publish}"\n'
                           f'replay = "tcp://127.0.0.1:{free_port()}"\n'
                           'heartbeat_interval = 0.5\n\n[dak]\nsignatures = "ignore"\n')
        DROP_IN.chmod(0o644)
        run("/usr/bin/busgate", "check-config", "--config", "/etc/busgate/busgate.toml")

        run("start-stop-daemon", "--start", "--background", "--make-pidfile", "--pidfile",
            str(PIDFILE), "--chuid", "busgate:busgate", "--chdir", "/var/lib/busgate",
            "--umask", "007", "--output", str(log), "--exec", "/usr/bin/busgate", "--",
            "--config", "/etc/busgate/busgate.toml", "run", timeout=30)

        # The MTA's user: not busgate, only a member of its group.
        run("userdel", MTA_USER, check=False)
        run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
            "--groups", "busgate", MTA_USER)
        piped = {}

        def send_mail() -> None:
            with MAIL.open("rb") as mail:
                piped["result"] = run(
                    "runuser", "-u", MTA_USER, "--", "/usr/bin/busgate", "mail", "--config",
                    "/etc/busgate/busgate.toml", stdin=mail, check=False, timeout=60)

        envelope = receive_topic(publish, "org.debian.dev.dak.package.accept", send_mail,
                                 timeout=90)
        assert piped["result"].returncode == 0, piped["result"].stderr
        assert envelope["msg"]["source"] == "foo" and envelope["msg"]["version"] == "1.2-1"
        assert envelope["username"] == "busgate"  # published by the daemon's user
        spooled = [p for p in Path("/var/spool/busgate").rglob("*") if p.is_file()]
        assert all(mode_owner(str(p))[2] == "busgate" for p in spooled), spooled

        # The history (busgate-record.service's store) from the packaged migrations.
        backfill = run("runuser", "-u", "busgate", "--", "/usr/bin/busgate", "record",
                       "--config", "/etc/busgate/busgate.toml", "--backfill", timeout=60)
        assert "backfilled 1 new of 1 outbox messages" in backfill.stdout, backfill.stdout
        site = Path("/usr/lib/python3/dist-packages/gateway/history")
        assert (site / "templates/index.html").is_file() and (site / "static").is_dir()

        # busgate web (busgate-web.service's command): serves where the system's starlette
        # and uvicorn are recent enough, else says in one line what to install.
        check_web()
        # busgate irc without irc>=20.4 (Debian 12 has 8.5): one line saying what to install.
        irc = run("runuser", "-u", "busgate", "--", "/usr/bin/busgate", "irc", "--config",
                  "/etc/busgate/busgate.toml", check=False, timeout=60)
        assert irc.returncode == 2 and "pip install 'irc>=20.4'" in irc.stderr, irc.stderr
        assert len(irc.stderr.strip().splitlines()) == 1, irc.stderr
    except BaseException:
        if log.exists():
            print("daemon log:\n" + log.read_text()[-4000:])
        lintian.kill()  # no orphan; its tags are not looked at
        lintian.wait()
        raise
    finally:
        stop_daemon()
        DROP_IN.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            DROP_IN.parent.rmdir()
        purge = run("apt-get", "purge", "-y", "busgate", check=False, timeout=180)
        run("userdel", MTA_USER, check=False)
    tags = lintian_tags(lintian, lintian_out)
    print(f"build {build_seconds:.1f} s; lintian: {tags}")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    for gone in ("/var/lib/busgate", "/var/spool/busgate", "/etc/busgate", "/usr/bin/busgate",
                 "/lib/systemd/system/busgate.service"):
        assert not Path(gone).exists(), gone
    assert not known_to_dpkg()
    # Debian keeps system users on purge (files elsewhere may still be theirs).
    assert pwd.getpwnam("busgate")


def test_the_gate_skips_without_the_switch_and_fails_in_ci_without_a_tool(monkeypatch):
    import test_debian_package as me

    monkeypatch.setattr(me, "ENABLED", False)
    with pytest.raises(pytest.skip.Exception, match="BUSGATE_PACKAGE_TEST=1"):
        me.need_tools()
    monkeypatch.setattr(me, "ENABLED", True)
    monkeypatch.setattr(me, "TOOLS", ("no-such-tool-busgate",))
    monkeypatch.setattr(me, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="no-such-tool-busgate missing"):
        me.need_tools()
    monkeypatch.setattr(me, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true and no-such-tool-busgate missing"):
        me.need_tools()
