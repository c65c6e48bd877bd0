"""Issue 9, finding 3: a real ``busgate run`` with [smtp] against hostile SMTP clients.

Each test reads the daemon's memory from /proc/PID/status and asserts a stated
bound: 100 unfinished 19 MB DATA sessions, a 1,000,000-RCPT session, and
1,100 idle connections under a 1,024-descriptor limit.
"""

from __future__ import annotations

import os
import resource
import smtplib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.spool import Spool
from tests.conftest import Daemon, free_port

RCPT = "dak@busgate.example"
MiB = 1024 * 1024
LEGIT = b"From: ftpmaster@ftp-master.debian.org\r\nSubject: legit\r\n\r\nhello\r\n"


def status_kib(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM`` figure of /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def smtp_section(**extra: Any) -> dict[str, Any]:
    return {"enabled": True, "port": free_port(), "recipients": [RCPT],
            "hostname": "busgate.test", **extra}


def send_legit(port: int, deadline: float = 20) -> str:
    """Deliver one small mail; retry while the listener is still full; return the reply."""
    end = time.monotonic() + deadline
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
                client.ehlo()
                client.mail("ftpmaster@ftp-master.debian.org")
                client.rcpt(RCPT)
                code, reply = client.data(LEGIT)
                assert code == 250, (code, reply)
                return reply.decode()
        except (smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected,
                smtplib.SMTPResponseException, ConnectionError):
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def read_reply(sock: socket.socket) -> bytes:
    """One (possibly multi-line) reply; returns its last line."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
        lines = data.split(b"\r\n")
        complete = [line for line in lines[:-1] if line[3:4] == b" "]
        if complete:
            return complete[-1]


def recv_queue_bytes(port: int) -> int:
    """Bytes waiting in the receive queues of the daemon's connections on ``port``."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                total += int(fields[4].split(":")[1], 16)
    return total


@pytest.mark.slow
def test_100_unfinished_19_mb_data_sessions_keep_rss_bounded(daemon) -> None:  # type: ignore[no-untyped-def]
    sessions, size = 100, 19_000_000
    proc, settings = daemon(smtp=smtp_section(max_connections=200, timeout=60,
                                              max_inflight_bytes=64 * MiB))
    port, pid = settings.smtp.port, proc.proc.pid
    send_legit(port)  # warm every code path before the baseline
    baseline = status_kib(pid, "VmRSS")
    line = b"x" * 78 + b"\r\n"
    block = line * (MiB // len(line))
    socks: list[socket.socket] = []
    try:
        for _ in range(sessions):
            sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            socks.append(sock)
            read_reply(sock)
            for command in (b"EHLO hostile.test", b"MAIL FROM:<a@hostile.test>",
                            f"RCPT TO:<{RCPT}>".encode(), b"DATA"):
                sock.sendall(command + b"\r\n")
                assert read_reply(sock)[:3] in (b"250", b"354")

        def pour(sock: socket.socket) -> None:
            sent = 0
            while sent < size:
                sock.sendall(block)
                sent += len(block)

        started = time.monotonic()
        threads = [threading.Thread(target=pour, args=(s,)) for s in socks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        while recv_queue_bytes(port) and time.monotonic() - started < 120:
            time.sleep(0.05)  # the daemon has read every byte sent
        poured = time.monotonic() - started
        peak = status_kib(pid, "VmHWM")
        assert proc.proc.poll() is None
        # still serving while 100 sessions hold their unfinished mails
        assert "queued as" in send_legit(port)
    finally:
        for sock in socks:
            sock.close()
    growth = (peak - baseline) / 1024
    print(f"\n100 x 19 MB unfinished DATA ({sessions * size / 1e9:.1f} GB in {poured:.1f} s): "
          f"VmRSS before {baseline / 1024:.0f} MiB, VmHWM after {peak / 1024:.0f} MiB, "
          f"growth {growth:.1f} MiB")
    assert growth < 64, f"daemon grew {growth:.0f} MiB for 100 unfinished DATA sessions"
    # the budget is given back when the sessions go: a 1 MiB mail (spilled) fits again
    deadline = time.monotonic() + 20
    while True:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            client.ehlo()
            client.mail("a@example.org")
            client.rcpt(RCPT)
            code, reply = client.data(b"Subject: big\r\n\r\n" + block)
        if code == 250 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert code == 250, reply
    assert not list(Spool(settings.spool_dir).tmp.iterdir())


def test_a_million_rcpt_in_one_session(daemon) -> None:  # type: ignore[no-untyped-def]
    max_commands = 5_000
    proc, settings = daemon(smtp=smtp_section(max_recipients=100, max_commands=max_commands))
    port, pid = settings.smtp.port, proc.proc.pid
    send_legit(port)
    baseline = status_kib(pid, "VmRSS")
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    replies = bytearray()

    def read_all() -> None:
        try:
            while chunk := sock.recv(65536):
                replies.extend(chunk)
        except ConnectionResetError:
            pass  # it hung up on a client still sending; its replies came before

    reader = threading.Thread(target=read_all)
    try:
        read_reply(sock)
        sock.sendall(b"EHLO hostile.test\r\n")
        read_reply(sock)
        reader.start()
        rcpt = f"RCPT TO:<{RCPT}>\r\n".encode()
        batch = b"MAIL FROM:<a@hostile.test>\r\n" + rcpt * 9_999
        started = time.monotonic()
        sent = 0
        try:
            for _ in range(100):  # 1,000,000 RCPT, pipelined
                sock.sendall(batch if not sent else rcpt * 10_000)
                sent += 10_000
        except OSError:
            pass  # the daemon hung up after max_commands, as it should
        reader.join(60)
        took = time.monotonic() - started
    finally:
        sock.close()
    codes = [line[:3] for line in bytes(replies).split(b"\r\n") if line]
    # MAIL, max_recipients RCPT taken, the rest of max_commands refused, then 421 and
    # the hang-up. The daemon closes with this client's flood still unread, so its
    # kernel resets the connection, and a reset may drop the last replies this side had
    # not read yet (seen once under load: 4,997 of 5,002): what arrived is a prefix of
    # that, nearly all of it, and the flood was cut off (the hang-up).
    want = [b"250"] * 101 + [b"452"] * (max_commands - 100) + [b"421"]
    assert codes == want[:len(codes)] and len(codes) > max_commands - 100
    assert sent < 1_000_000  # hung up on
    growth = (status_kib(pid, "VmHWM") - baseline) / 1024
    print(f"\n{sent:,} RCPT sent, {len(codes) - 2:,} answered in {took:.1f} s, "
          f"VmHWM growth {growth:.1f} MiB")
    assert growth < 8, f"daemon grew {growth:.1f} MiB for one RCPT flood"
    assert proc.proc.poll() is None
    assert "queued as" in send_legit(port)


def _nofile(limit: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return apply


@pytest.mark.slow
def test_1100_idle_connections_under_a_1024_fd_limit(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1400:
        if hard != resource.RLIM_INFINITY and hard < 1400:
            pytest.skip(f"this test opens 1,100 sockets; RLIMIT_NOFILE hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1400, hard))
    settings = make_settings(smtp=smtp_section(max_connections=5000, timeout=60))
    port = settings.smtp.port
    proc = Daemon(Path(settings.loaded_from[0]), tmp_path / "daemon.log")
    proc.start(preexec_fn=_nofile(1024))
    try:
        pid = proc.proc.pid
        log_before = proc.log_path.stat().st_size
        socks: list[socket.socket] = []
        greetings: list[bytes] = []
        most_fds = 0
        try:
            for _ in range(1100):
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                socks.append(sock)
                sock.settimeout(30)
                greetings.append(sock.recv(4096).split(b" ", 1)[0])
                if len(socks) % 100 == 0:
                    most_fds = max(most_fds, len(os.listdir(f"/proc/{pid}/fd")))
            time.sleep(0.5)
            assert proc.proc.poll() is None, proc.output()
            most_fds = max(most_fds, len(os.listdir(f"/proc/{pid}/fd")))
            log_growth = proc.log_path.stat().st_size - log_before
        finally:
            for sock in socks:
                sock.close()
        taken, refused = greetings.count(b"220"), greetings.count(b"421")
        print(f"\n1,100 connections under RLIMIT_NOFILE 1024: {taken} greeted 220, {refused} "
              f"refused 421; daemon used at most {most_fds} fds; log grew {log_growth} bytes")
        assert taken + refused == 1100 and 0 < taken < 1024 - 128
        assert most_fds < 1024 - 64  # the reserve stayed free
        assert log_growth < 4096, proc.output()[-4000:]
        assert "Traceback" not in proc.output() and "Too many open files" not in proc.output()
        assert "queued as" in send_legit(port)  # a legitimate mail afterwards
        assert proc.proc.poll() is None
    finally:
        assert proc.stop() == 0
