"""Issue 9, findings 5 and 6 and the quarantine cap of 4: hostile and poison input on
the ingestion path, through a real ``busgate run``, real spool entries, real
``busgate publish`` / ``busgate mail`` processes and real SMTP conversations."""

from __future__ import annotations

import json
import math
import os
import re
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from gateway import discovery, envelope, heartbeat, runtime
from gateway.errors import ParseError
from gateway.event import LATEST_TIME, Event
from gateway.spool import Spool
from gateway.subscriber import Subscriber
from tests.conftest import BUSGATE, REPO, free_port
from tests.dak_mail_helpers import fixture

RCPT = "dak@busgate.example"
GOOD = {"service": "logger", "object": "message", "event": "log", "body": {"log": "fine"}}


def run_cli(proc, *args: str, stdin: bytes = b"",
            timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*BUSGATE, *args], input=stdin, capture_output=True, env=proc.env,
                          cwd=REPO, timeout=timeout)


def wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def record(key: str, **fields: object) -> bytes:
    return json.dumps({**GOOD, "key": key, **fields}).encode() + b"\n"


def entry_name(spool: Spool, tag: str, kind: str = "events") -> Path:
    """A name in new/ that sorts after everything spooled so far (as deliver() names them)."""
    return spool.new / f"{time.time_ns():020d}.{os.getpid()}.{tag}.{kind}"


def worker_restarts(proc) -> int:
    return proc.output().count("spool worker exited")


# -- finding 5: the wake pipe ------------------------------------------------------------

def test_smtp_mails_then_publish_all_reach_the_outbox(daemon) -> None:
    """Two SMTP mails wake the worker through its pipe; a later `busgate publish` must
    still be ingested (the worker used to block for ever draining the empty pipe)."""
    proc, settings = daemon(smtp={"enabled": True, "port": free_port(), "recipients": [RCPT]})
    store = runtime.open_store(settings)
    # The worker must be up and idle, waiting on its wake pipe, when the mails come.
    assert run_cli(proc, "publish", "--message", "probe").returncode == 0
    wait_for(lambda: store.last_seq_id() == 1, 20, "the probe (the worker running)")
    with smtplib.SMTP("127.0.0.1", settings.smtp.port, timeout=30) as client:
        for name in ("new.eml", "accepted-uploader.eml"):
            raw = fixture(name).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            assert client.sendmail("ftpmaster@ftp-master.debian.org", [RCPT], raw) == {}
    result = run_cli(proc, "publish", "--message", "after the mails")
    assert result.returncode == 0, result.stderr
    spool = runtime.open_spool(settings)

    def published() -> bool:
        return not spool.pending() and any(
            b'"after the mails"' in row.envelope.encode() for row in store.rows_after(0))

    wait_for(published, 20, "the published message in the outbox")
    assert store.counters()["ingested.mail"] == 2  # both mails were published too
    assert worker_restarts(proc) == 0


# -- finding 6: poison items -----------------------------------------------------------

def test_poison_spool_items_are_quarantined_once_and_ingestion_goes_on(daemon, tmp_path) -> None:
    proc, settings = daemon(ingest={"max_item_bytes": 256 * 1024, "max_json_depth": 8})
    spool = runtime.open_spool(settings)
    store = runtime.open_store(settings)
    worker_pid = _worker_pid(proc)
    long_topic = "x" * 250
    poison = [
        record("long-topic", object=long_topic),             # topic over 255 bytes
        record("time-string", time="yesterday"),
        record("time-huge", time=1e300),
        record("time-bool", time=True),
        b'{"service":"logger","object":"message","event":"log","key":"t-nan","time":NaN}\n',
        b'{"service":"logger","object":"message","event":"log","key":"b-nan",'
        b'"body":{"v":NaN}}\n',
        b'{"service":"logger","object":"message","event":"log","key":"b-inf",'
        b'"body":{"v":1e400}}\n',
        b'{"service":"logger","object":"message","event":"log","key":"deep","body":'
        + b"[" * 100_000 + b"]" * 100_000 + b"}\n",          # 100k deep
        b'{"service":"logger","object":"message","event":"log","key":"nine","body":'
        + b'{"a":' * 9 + b"1" + b"}" * 9 + b"}\n",           # over max_json_depth = 8
        record("usernames", usernames="not-a-list"),
    ]
    for item in poison:
        spool.deliver("events", item)
    big = entry_name(spool, "big")
    big.write_bytes(b"y" * (300 * 1024))                     # over ingest.max_item_bytes
    directory = entry_name(spool, "dir")
    directory.mkdir()
    fifo = entry_name(spool, "fifo")
    os.mkfifo(fifo)
    link = entry_name(spool, "zero")
    link.symlink_to("/dev/zero")
    odd = spool.new / os.fsdecode(b"%020d.\xff\xfe.events" % time.time_ns())
    odd.write_bytes(b"not json\n")                           # a name that is not UTF-8
    spool.deliver("events", record("good-last"))             # must get through
    wait_for(lambda: any(r.envelope.find('"fine"') > 0 for r in store.rows_after(0)),
             30, "the good item behind the poison")
    wait_for(lambda: not spool.pending(), 10, "an empty spool")
    counts = store.quarantine_counts()
    assert counts == {"error": len(poison) + 1, "oversize": 1, "not-regular": 3}, counts
    assert store.last_seq_id() == 1
    rows = {q["origin"].split(".")[2]: q for q in store.quarantined()}
    errors = " | ".join(q["error"] for q in store.quarantined())
    for needle in ("more than 255", "time must be a number", "outside 0..", "NaN",
                   "out of range", "nested deeper than 9", "usernames must be a list",
                   "a directory", "a FIFO", "a symbolic link", "over the 262144-byte limit"):
        assert needle in errors, needle
    assert "Traceback" not in proc.output()
    assert rows["big"]["raw"] == b"y" * settings.quarantine.oversize_keep_bytes
    rejected = spool.root / "rejected"
    assert {p.name for p in rejected.iterdir()} == {directory.name, fifo.name, link.name}
    # one attempt each: the same worker did it all, nothing was quarantined twice
    assert _worker_pid(proc) == worker_pid and worker_restarts(proc) == 0
    assert sum(store.counters().get(f"quarantined.{r}", 0) for r in counts) == sum(
        counts.values())
    again = run_cli(proc, "reprocess", "--all")
    assert again.returncode == 65 and b"still not-regular" in again.stdout
    assert proc.proc.poll() is None


@pytest.mark.slow
def test_an_item_the_worker_dies_on_twice_is_quarantined_as_crashed(daemon) -> None:
    """A death no ``except`` can catch (here: kill -9 of the worker mid-item, as the OOM
    killer would) is counted against the item; at ingest.max_crashes it is quarantined
    unparsed and the next worker goes on."""
    proc, settings = daemon(ingest={"max_crashes": 2})
    spool = runtime.open_spool(settings)
    store = runtime.open_store(settings)
    lines = b"".join(record(f"slow-{i}", body={"log": "s" * 80}) for i in range(60_000))
    slow = Path(spool.deliver("events", lines))
    mark = spool.root / ".ingesting"
    for death in (1, 2):
        # the crashes so far, this daemon run's token, and the item
        started = re.compile(rf"{death - 1} [0-9a-f]{{32}}\n{re.escape(slow.name)}")
        wait_for(lambda m=started: mark.exists() and m.fullmatch(mark.read_text()), 60,
                 f"a worker starting on the slow item (attempt {death})")
        os.kill(_worker_pid(proc), 9)
        wait_for(lambda d=death: worker_restarts(proc) == d, 20, "the worker restarted")
        assert store.quarantine_counts() == {}  # one death alone is not held against it
    spool.deliver("events", record("after-the-crashes"))
    wait_for(lambda: store.quarantine_counts() == {"crashed": 1}, 60, "the crashed item")
    wait_for(lambda: any(r.envelope.find('"fine"') > 0 for r in store.rows_after(0)), 30,
             "the item behind it")
    (kept,) = store.quarantined()
    assert kept["origin"] == slow.name and bytes(kept["raw"]) == lines
    assert "died 2 time(s)" in kept["error"]
    assert not mark.exists() and not slow.exists()


def test_stale_tmp_entries_that_are_not_files_do_not_stop_the_worker(tmp_path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    (spool.tmp / "dir").mkdir()
    (spool.tmp / "dir" / "f").write_bytes(b"x")
    (spool.tmp / "dangling").symlink_to(tmp_path / "nowhere")
    (spool.tmp / "file").write_bytes(b"x")
    for name in ("dir", "file"):
        os.utime(spool.tmp / name, (0, 0))
    os.utime(spool.tmp / "dangling", (0, 0), follow_symlinks=False)
    assert spool.clean_tmp() == 2  # the stale file and link; the directory is left alone
    assert [p.name for p in spool.tmp.iterdir()] == ["dir"]


def _worker_pid(proc) -> int:
    """The daemon's spool worker child (not multiprocessing's resource tracker)."""
    def child() -> int | None:
        for task in Path(f"/proc/{proc.proc.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return int(pid)
                except OSError:
                    continue
        return None
    wait_for(lambda: child() is not None, 10, "the spool worker")
    return child()  # type: ignore[return-value]


def test_nothing_nan_or_infinite_reaches_the_wire(daemon) -> None:
    _proc, settings = daemon()
    spool = runtime.open_spool(settings)
    with Subscriber(discovery.discover(settings),
                    heartbeat_topic=heartbeat.topic(settings.topic_prefix)) as sub:
        for attempt in range(50):  # join first (no slow-joiner sleeps)
            spool.deliver("events", record(f"probe-{attempt}"))
            if any(True for _ in sub.messages(count=1, timeout=0.3)):
                break
        for constant in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
            spool.deliver("events", b'{"service":"logger","object":"message","event":"log",'
                          b'"key":"k-' + constant + b'","body":{"v":' + constant + b"}}\n")
        spool.deliver("events", record("after"))
        got = []
        for message in sub.messages(count=200, timeout=15):
            got.append(message)
            if message.envelope["msg_id"] == envelope.msg_id_for("after"):
                break
    assert got and got[-1].envelope["msg_id"] == envelope.msg_id_for("after")
    for message in got:
        for value in message.body.values():
            assert not isinstance(value, float) or math.isfinite(value)
    assert runtime.open_store(settings).quarantine_counts() == {"error": 4}
    with pytest.raises(ValueError):
        envelope.canonical_json({"v": float("nan")})


def test_event_time_must_be_a_finite_number_in_range() -> None:
    for bad in ("2024", True, float("nan"), float("inf"), 1e300, -1, LATEST_TIME + 1):
        with pytest.raises(ParseError):
            Event(service="s", object="o", event="e", key="k", body={}, time=bad)
    for good in (0, 1_700_000_000, 1_700_000_000.5, LATEST_TIME):
        assert Event(service="s", object="o", event="e", key="k", body={}, time=good).time == good


# -- busgate publish: the same limits, before anything is stored ---------------------------

def test_publish_refuses_what_the_worker_would_refuse_before_storing(daemon) -> None:
    proc, settings = daemon(ingest={"max_json_depth": 4, "max_item_bytes": 300 * 1024})
    spool = runtime.open_spool(settings)
    # topic: "org.debian.dev.logger." (22 bytes) + 233 = 255 is the limit, 256 is over
    fits, over = "a" * 229 + ".log", "a" * 230 + ".log"
    cases = [
        (["--topic", over, "--message", "x"], b"", "more than 255"),
        (["--json-input"], b'{"v": NaN}\n', "NaN"),
        (["--json-input"], b'{"v": 1e400}\n', "out of range"),
        (["--json-input"], b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested deeper than 4"),
        (["--json-input"], b'{"a":{"b":{"c":{"d":{"e":1}}}}}\n', "nested deeper than 4"),
        ([], b"z" * (310 * 1024) + b"\n", "ingest.max_item_bytes"),
    ]
    for args, stdin, needle in cases:
        result = run_cli(proc, "publish", *args, stdin=stdin)
        stderr = result.stderr.decode()
        assert result.returncode == 65, (args, stderr)
        assert needle in stderr and "Traceback" not in stderr, (args, stderr)
    assert spool.pending() == [] and runtime.open_store(settings).last_seq_id() == 0
    ok = run_cli(proc, "publish", "--topic", fits, "--json-input",
                 stdin=b'{"a":{"b":{"c":{"d":1}}}}\n')
    assert ok.returncode == 0, ok.stderr
    store = runtime.open_store(settings)
    wait_for(lambda: store.last_seq_id() == 1, 20, "the message at the limits")
    assert len(store.rows_after(0)[0].topic.encode()) == 255


def test_publish_splits_items_at_max_item_bytes(daemon) -> None:
    proc, settings = daemon(ingest={"max_item_bytes": 4096})
    lines = b"".join(b"%04d " % i + b"p" * 300 + b"\n" for i in range(40))
    result = run_cli(proc, "publish", stdin=lines)
    assert result.returncode == 0, result.stderr
    store = runtime.open_store(settings)
    wait_for(lambda: store.last_seq_id() == 40, 20, "40 messages")
    assert store.quarantine_counts() == {} and store.counters()["ingested.events"] > 1


# -- busgate mail: size checked while streaming -----------------------------------------

@pytest.mark.parametrize("via_spool_option", [False, True])
def test_mail_over_the_limit_stops_storing_and_is_quarantined_bounded(
        daemon, via_spool_option: bool) -> None:
    proc, settings = daemon(mail={"max_size": 256 * 1024},
                            quarantine={"oversize_keep_bytes": 1000})
    mail = fixture("new.eml") + b"\n" + b"A" * (3 * 1024 * 1024)
    args = (["mail", "--spool", str(settings.spool_dir), "--max-size", str(256 * 1024)]
            if via_spool_option else ["mail"])
    result = run_cli(proc, *args, stdin=mail)
    assert result.returncode == 0, result.stderr
    assert b"over mail.max_size (262144)" in result.stderr
    store = runtime.open_store(settings)
    wait_for(lambda: store.quarantine_counts() == {"oversize": 1}, 20, "the oversize record")
    (kept,) = store.quarantined()
    assert kept["kind"] == "mail" and kept["raw"] == mail[:1000]
    assert f"mail of {len(mail)} bytes, over the 262144-byte limit" in kept["error"]
    assert store.last_seq_id() == 0
    assert list((settings.spool_dir / "tmp").iterdir()) == []  # no partial file left


# -- quarantine: a total cap ------------------------------------------------------------

def test_quarantine_is_capped_in_bytes_and_items(daemon) -> None:
    proc, settings = daemon(quarantine={"max_items": 5, "max_bytes": 20_000})
    junk = [b"Subject: junk %d\n\n" % i + b"j" * 6000 + b"\n" for i in range(8)]
    for mail in junk:
        assert run_cli(proc, "mail", stdin=mail).returncode == 0
    store = runtime.open_store(settings)
    wait_for(lambda: store.counters().get("quarantine.dropped", 0) == 3, 30,
             "three junk mails over quarantine.max_items")
    rows = store.quarantined()
    assert len(rows) == 5 and {r["reason"] for r in rows} == {"unrecognized"}
    assert sum(len(r["raw"]) for r in rows) <= 20_000
    kept_whole = [r for r in rows if r["raw"]]
    assert len(kept_whole) == 3 and all(bytes(r["raw"]) in junk for r in kept_whole)
    stripped = [r for r in rows if not r["raw"]]
    assert len(stripped) == 2 and all("not kept: quarantine.max_bytes" in r["error"]
                                      for r in stripped)
    counters = store.counters()
    assert counters["quarantine.raw_dropped"] == 2
    assert proc.output().count("quarantine full") == 3
