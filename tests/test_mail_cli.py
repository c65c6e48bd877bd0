"""``busgate mail`` as an MTA runs it: a real process, a real spool, real exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway import config
from gateway.daemon import serve
from gateway.ingest import ingest
from gateway.runtime import open_store
from gateway.spool import Spool
from tests.conftest import BUSGATE, REPO, adopt, mark_spool, write_config
from tests.dak_mail_helpers import fixture

EX_DATAERR, EX_TEMPFAIL = 65, 75
#: Runs ``busgate mail`` and prints its own peak RSS (VmHWM is per process image, unlike
#: ru_maxrss, which also counts the forked copy of the test runner before exec).
PEAK_RSS = """
import re, sys
from gateway.cli import main
code = main(["mail"])
status = open("/proc/self/status").read()
print(re.search(r"VmHWM:\\s+(\\d+ kB)", status).group(1))
sys.exit(code)
"""


def run_mail(cfg: Path, data: bytes | None = None, *args: str, stdin: object = None,
             timeout: float = 60, **popen: object) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "BUSGATE_CONFIG": str(cfg)}
    return subprocess.run([*BUSGATE, "mail", *args], input=data, stdin=stdin,  # type: ignore[call-overload]
                          capture_output=True, timeout=timeout, env=env, check=False, **popen)


@pytest.fixture
def cfg(make_settings, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    adopt(make_settings())
    return tmp_path / "busgate.toml"


def spooled(cfg: Path) -> list[Path]:
    return Spool(config.load(cfg).spool_dir).pending()


def test_mail_is_spooled_byte_for_byte(cfg: Path) -> None:
    raw = fixture("announce-signed.eml")
    result = run_mail(cfg, raw)
    assert result.returncode == 0, result.stderr
    (item,) = spooled(cfg)
    assert item.read_bytes() == raw
    assert item.name.endswith(".mail")
    assert not list((item.parent.parent / "tmp").iterdir())


def test_spooled_while_daemon_down_then_published_once(cfg: Path) -> None:
    for name in ("announce-signed.eml", "accepted-uploader.eml", "not-dak-personal.eml"):
        assert run_mail(cfg, fixture(name)).returncode == 0
    settings = config.load(cfg)
    store = open_store(settings)
    assert store.last_seq_id() == 0
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(settings, stop),))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if store.published_seq_id() >= 1 and not spooled(cfg):
                break
            time.sleep(0.05)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        loop.close()
    rows = store.rows_after(0)
    assert len(rows) == 1
    assert json.loads(rows[0].envelope)["topic"].endswith("dak.package.accept")
    assert store.published_seq_id() == 1
    assert store.quarantine_counts() == {"unrecognized": 1}


@pytest.mark.parametrize("data", [b"", b"\n\n  \r\n"])
def test_empty_input_is_dataerr(cfg: Path, data: bytes) -> None:
    result = run_mail(cfg, data)
    assert result.returncode == EX_DATAERR
    assert b"empty" in result.stderr
    assert spooled(cfg) == []


def test_unwritable_spool_is_tempfail(cfg: Path) -> None:
    spool = Spool(config.load(cfg).spool_dir)
    spool.tmp.rmdir()
    spool.tmp.write_text("a file where the spool's tmp/ should be")
    result = run_mail(cfg, fixture("new.eml"))
    assert result.returncode == EX_TEMPFAIL
    assert b"cannot store the mail" in result.stderr


def test_disk_full_mid_mail_is_tempfail_and_leaves_nothing(cfg: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.eml"
    big.write_bytes(fixture("new.eml") + b"y" * (4 * 1024 * 1024))

    def limit_file_size() -> None:  # the child cannot write files past 1 MiB: "disk full"
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))

    with big.open("rb") as stdin:
        result = run_mail(cfg, None, stdin=stdin, preexec_fn=limit_file_size)
    assert result.returncode == EX_TEMPFAIL, result.stderr
    assert b"cannot store the mail" in result.stderr
    spool = Spool(config.load(cfg).spool_dir)
    assert spool.pending() == []
    assert not list(spool.tmp.iterdir())


def test_unreadable_config_is_tempfail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[state\n")
    result = run_mail(bad, fixture("new.eml"))
    assert result.returncode == EX_TEMPFAIL
    assert b"configuration error" in result.stderr


def test_fifty_mebibytes_are_streamed_and_only_a_bounded_head_is_quarantined(
        tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", {"state": {"dir": str(tmp_path / "var")},
                                             "mail": {"max_size": 1024 * 1024}})
    adopt(config.load(cfg))
    big = tmp_path / "big.eml"
    size = 50 * 1024 * 1024
    with big.open("wb") as out:
        out.write(fixture("new.eml"))
        out.truncate(size)
    env = {**os.environ, "BUSGATE_CONFIG": str(cfg)}
    with big.open("rb") as stdin:
        result = subprocess.run([sys.executable, "-c", PEAK_RSS], stdin=stdin, env=env,
                                capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    peak_kib = int(result.stdout.split()[-2])
    assert peak_kib < 40 * 1024, f"peak RSS {peak_kib} KiB for a 50 MiB mail: not streamed"
    assert b"over mail.max_size" in result.stderr
    (item,) = spooled(cfg)  # storing stopped at the limit: a small oversize record only
    assert item.name.endswith(".oversize") and item.stat().st_size < 70 * 1024
    settings = config.load(cfg)
    store = open_store(settings)
    outcome = ingest(store, settings, "oversize", item.read_bytes(), item.name)
    assert outcome.quarantined == "oversize"
    (kept,) = store.quarantined()
    assert kept["kind"] == "mail" and kept["raw"] == big.read_bytes()[:65536]
    assert f"mail of {size} bytes" in kept["error"]


def test_pipe_path_imports_nothing_heavy(cfg: Path) -> None:
    env = {**os.environ, "BUSGATE_CONFIG": str(cfg)}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "gateway", "mail"],
                            input=fixture("new.eml"), capture_output=True, env=env,
                            timeout=60, check=True)
    imported = {line.split("|")[-1].strip() for line in result.stderr.decode().splitlines()
                if line.startswith("import time:")}
    heavy = {"email", "sqlite3", "zmq", "debian", "json", "gateway.store", "adapters",
             "asyncio", "aiosmtpd", "gateway.sources", "importlib.metadata"}
    assert "[dak]" in cfg.read_text()  # a source's table is read without the registry
    assert not imported & heavy
    assert {name for name in imported if name.startswith("adapters.")} == set()


def test_dry_run_prints_events_and_stores_nothing(cfg: Path) -> None:
    result = run_mail(cfg, fixture("announce-signed.eml"), "--dry-run")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.decode().splitlines()
    record = json.loads(line)
    assert record["topic"] == "org.debian.dev.dak.package.accept"
    assert record["msg"]["source"] == "foo"
    assert record["key"] == "dak:accept:foo_1.2-1_all+source:unstable"
    settings = config.load(cfg)
    assert spooled(cfg) == [] and open_store(settings).last_seq_id() == 0


def test_dry_run_without_event_prints_nothing(cfg: Path) -> None:
    result = run_mail(cfg, fixture("not-dak-personal.eml"), "--dry-run")
    assert result.returncode == 0
    assert result.stdout == b""


@pytest.mark.parametrize(("data", "needle"), [
    (b"", b"empty"),
    (fixture("mismatch-source.eml"), b"disagrees"),
])
def test_dry_run_unreadable_input(cfg: Path, data: bytes, needle: bytes) -> None:
    result = run_mail(cfg, data, "--dry-run")
    assert result.returncode == EX_DATAERR
    assert needle in result.stderr and result.stdout == b""


def test_dry_run_oversize(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", {"state": {"dir": str(tmp_path / "var")},
                                             "mail": {"max_size": 4096}})
    result = run_mail(cfg, fixture("announce-signed.eml") + b"z" * 100_000, "--dry-run")
    assert result.returncode == 0
    assert result.stdout == b"" and b"oversize" in result.stderr


def test_spool_option_stores_without_reading_the_configuration(tmp_path):
    spool = Spool(tmp_path / "spool")
    mark_spool(spool.root)
    env = {**os.environ, "BUSGATE_CONFIG": str(tmp_path / "does-not-exist.toml")}
    ok = subprocess.run([*BUSGATE, "mail", "--spool", str(spool.root)],
                        input=b"Subject: x\n\nhi\n", env=env, capture_output=True)
    assert ok.returncode == 0, ok.stderr
    (item,) = spool.pending()
    assert item.read_bytes() == b"Subject: x\n\nhi\n"
    missing = tmp_path / "typo"
    bad = subprocess.run([*BUSGATE, "mail", f"--spool={missing}"], input=b"Subject: x\n\nhi\n",
                         capture_output=True)
    assert bad.returncode == 75
    assert b"not the spool of a busgate daemon" in bad.stderr
    assert not missing.exists(), "a mistyped --spool must not create a spool nobody reads"


def test_the_fast_path_imports_neither_argparse_nor_the_config_loader(tmp_path):
    spool = Spool(tmp_path / "spool")
    mark_spool(spool.root)
    probe = ("import sys; sys.argv = ['busgate', 'mail', '--spool', sys.argv[1]];"
             "from gateway.cli import main; code = main();"
             "bad = sorted(m for m in ('argparse', 'getopt', 'tomllib', 'gateway.config',"
             " 'pathlib', 'email', 'sqlite3', 'zmq', 'gateway.sources', 'importlib.metadata',"
             " 'adapters') if m in sys.modules);"
             "print(code, bad)")
    out = subprocess.run([sys.executable, "-c", probe, str(spool.root)], input=b"Subject: x\n\n",
                         capture_output=True, text=False, cwd=REPO)
    assert out.stdout.decode().split(None, 1) == ["0", "[]\n"], out.stderr
