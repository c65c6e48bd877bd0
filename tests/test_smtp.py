"""The SMTP listener driven by smtplib over 127.0.0.1, in a real event loop."""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import config
from gateway.daemon import serve
from gateway.errors import ConfigError
from gateway.runtime import open_store
from gateway.smtp import SmtpListener
from gateway.spool import Spool
from tests.conftest import free_port
from tests.dak_mail_helpers import fixture

RCPT = "dak@busgate.example"


def crlf(raw: bytes) -> bytes:
    """SMTP DATA is CRLF-terminated lines; smtplib sends bytes as given."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Running:
    """A listener in its own event loop thread, as the daemon runs it."""

    def __init__(self, settings: config.Settings, spool: Any):
        self.notified = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.listener = SmtpListener(settings, spool, self.notified.set)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.listener.start())
        self.port = settings.smtp.port

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=30)

    def close(self) -> None:
        self.call(self.listener.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def smtp_settings(make_settings) -> Callable[..., config.Settings]:  # type: ignore[no-untyped-def]
    def factory(smtp: dict[str, Any] | None = None, **mail: Any) -> config.Settings:
        return make_settings(smtp={"enabled": True, "port": free_port(),
                                   "recipients": [RCPT, "Other@Busgate.Example"],
                                   "hostname": "busgate.test", "timeout": 20, **(smtp or {})},
                             mail=mail or {})
    return factory


@pytest.fixture
def running(smtp_settings) -> Iterator[Callable[..., Running]]:  # type: ignore[no-untyped-def]
    started: list[Running] = []

    def start(spool: Any = None, smtp: dict[str, Any] | None = None, **mail: Any) -> Running:
        settings = smtp_settings(smtp, **mail)
        run = Running(settings, spool or Spool(settings.spool_dir))
        run.settings = settings  # type: ignore[attr-defined]
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


def test_250_only_after_the_mail_is_in_the_spool(running) -> None:  # type: ignore[no-untyped-def]
    run = running()
    raw = fixture("announce-signed.eml")
    with run.client() as client:
        code, banner = client.ehlo()
        assert code == 250 and b"SIZE" in banner
        client.mail("ftpmaster@ftp-master.debian.org")
        assert client.rcpt("OTHER@busgate.example")[0] == 250  # case-insensitive
        code, reply = client.data(crlf(raw))
        assert code == 250 and b"queued as" in reply
        name = reply.decode().rsplit(" ", 1)[-1]
    item = Spool(run.settings.spool_dir).new / name
    assert item.exists()
    assert item.read_bytes().replace(b"\r\n", b"\n") == raw
    assert run.notified.is_set()


def test_unknown_recipient_gets_550(running) -> None:  # type: ignore[no-untyped-def]
    run = running()
    with run.client() as client, pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        client.sendmail("a@example.org", ["nobody@busgate.example"], b"Subject: x\n\nhi\n")
    assert info.value.recipients["nobody@busgate.example"][0] == 550
    assert Spool(run.settings.spool_dir).pending() == []


def test_declared_size_over_limit_gets_552(running) -> None:  # type: ignore[no-untyped-def]
    run = running(max_size=1024 * 1024)
    with run.client() as client:
        client.ehlo()
        code, _ = client.mail("a@example.org", [f"SIZE={50 * 1024 * 1024}"])
        assert code == 552


def test_data_over_limit_gets_552_and_nothing_is_stored(running) -> None:  # type: ignore[no-untyped-def]
    run = running(max_size=1024 * 1024)
    body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 3000  # 3 MiB, no SIZE given
    with run.client() as client:
        client.ehlo()
        client.mail("a@example.org")
        client.rcpt(RCPT)
        code, _ = client.data(body)
        assert code == 552
        assert client.noop()[0] == 250  # the session goes on
    assert Spool(run.settings.spool_dir).pending() == []


def test_spool_failure_gets_451(running, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    run = running(spool=Spool(blocker / "spool"))
    with run.client() as client:
        client.ehlo()
        client.mail("a@example.org")
        client.rcpt(RCPT)
        code, reply = client.data(crlf(fixture("new.eml")))
    assert code == 451 and b"try again" in reply
    assert not run.notified.is_set()


class BrokenSpool:
    def deliver(self, kind: str, data: bytes) -> Path:
        raise RuntimeError("a bug, not a disk problem")


def test_internal_error_gets_451_not_500(running) -> None:  # type: ignore[no-untyped-def]
    run = running(spool=BrokenSpool())
    with run.client() as client:
        client.ehlo()
        client.mail("a@example.org")
        client.rcpt(RCPT)
        code, reply = client.data(crlf(fixture("new.eml")))
    assert code == 451, reply


def test_no_recipients_is_a_config_error(make_settings) -> None:  # type: ignore[no-untyped-def]
    # refused when the configuration is loaded (check-config and run alike) ...
    with pytest.raises(ConfigError, match=r"smtp\.recipients"):
        make_settings(smtp={"enabled": True, "port": free_port()})
    # ... and by the listener itself, for settings built without the loader
    settings = make_settings(smtp={"port": free_port()})
    with pytest.raises(ConfigError, match=r"smtp\.recipients"):
        SmtpListener(settings, Spool(settings.spool_dir), lambda: None)


def test_non_positive_timeout_is_a_config_error(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(smtp={"recipients": [RCPT], "timeout": 0})
    with pytest.raises(ConfigError, match=r"smtp\.timeout"):
        SmtpListener(settings, Spool(settings.spool_dir), lambda: None)


def test_port_in_use_is_a_config_error(running, smtp_settings) -> None:  # type: ignore[no-untyped-def]
    run = running()
    settings = smtp_settings()
    clash = SmtpListener(settings, Spool(settings.spool_dir), lambda: None)
    clash.port = run.port
    with pytest.raises(ConfigError, match="cannot listen"):
        run.call(clash.start())


def test_stop_closes_the_port(running) -> None:  # type: ignore[no-untyped-def]
    run = running()
    with run.client() as client:
        assert client.noop()[0] == 250
        run.call(run.listener.stop())
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", run.port, timeout=5)


def test_daemon_publishes_a_mail_received_over_smtp(smtp_settings) -> None:  # type: ignore[no-untyped-def]
    settings = smtp_settings()
    stop = asyncio.Event()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete,
                              args=(serve(settings, stop, ready.set),))
    thread.start()
    try:
        assert ready.wait(20)
        with smtplib.SMTP("127.0.0.1", settings.smtp.port, timeout=30) as client:
            client.sendmail("ftpmaster@ftp-master.debian.org", [RCPT],
                            crlf(fixture("accepted-uploader.eml")))
            client.sendmail("ftpmaster@ftp-master.debian.org", [RCPT],
                            crlf(fixture("announce-signed.eml")))
        store = open_store(settings)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and store.published_seq_id() < 1:
            time.sleep(0.05)
        time.sleep(0.2)
        assert store.last_seq_id() == 1 and store.published_seq_id() == 1
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        loop.close()


def test_documented_example_config_loads() -> None:
    from tests.conftest import REPO

    settings = config.load(REPO / "conf" / "examples" / "mail.toml")
    assert settings.smtp.enabled and settings.smtp.recipients == ["dak@busgate.example.org"]
    assert settings.smtp.timeout == 300.0 and settings.smtp.hostname == ""
    assert settings.mail.max_size == 20 * 1024 * 1024
    defaults = config.Settings()
    assert (settings.smtp.host, settings.smtp.port) == (defaults.smtp.host, defaults.smtp.port)


# --- streamed DATA -------------------------------------------------------------------------

def _stuff(content: bytes) -> bytes:
    """What a client sends for ``content`` (RFC 5321 4.5.2), with the end marker."""
    return (b"\r\n" + content).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"


def _read_all(stream: bytes, pieces: list[int]) -> tuple[bytes, bytes]:
    """Run read_data on a real StreamReader fed ``stream`` in pieces of the given sizes."""
    from gateway.smtp_data import read_data

    async def main() -> tuple[bytes, bytes]:
        reader = asyncio.StreamReader(limit=1001)  # aiosmtpd's line_length_limit
        out: list[bytes] = []

        async def feed() -> None:
            view, sizes = memoryview(stream), iter(pieces)
            while view:
                size = next(sizes, len(view))
                reader.feed_data(bytes(view[:size]))
                view = view[size:]
                await asyncio.sleep(0)
            reader.feed_eof()

        async def write(block: bytes) -> None:
            out.append(block)

        feeder = asyncio.create_task(feed())
        await read_data(reader, write, lambda: None)
        await feeder
        return b"".join(out), await reader.read()

    return asyncio.run(main())


@pytest.mark.parametrize("content", [
    b"",
    b"\r\n",
    b".\r\n",
    b"..\r\n.x\r\n\r\n.\r\n",
    b"Subject: a\r\n\r\nbody\r\n.\r\nnot the end\r\n",
    b"\r\r\r\n\r\n.\r.\n.\r\n" * 300,
    b"x" * 5000 + b"\r\n.." + b"y" * 3000 + b"\r\n",
])
def test_streamed_data_unstuffs_and_stops_at_the_dot_for_any_cut(content: bytes) -> None:
    import random

    stream = _stuff(content) + b"QUIT\r\n"
    rng = random.Random(len(content))
    for pieces in ([len(stream)], [1] * len(stream), [rng.randint(1, 7) for _ in stream],
                   [rng.randint(1, 3000) for _ in stream]):
        got, rest = _read_all(stream, pieces)
        assert got == content
        assert rest == b"QUIT\r\n"  # nothing read past the end of DATA


def test_random_mail_survives_the_stream_byte_for_byte() -> None:
    import random

    rng = random.Random(9)
    alphabet = [b".", b"\r", b"\n", b"a", b"\r\n", b"\r\n.", b"\r\n.\r"]
    for _ in range(30):
        content = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3000)))
        content += b"" if not content or content.endswith(b"\r\n") else b"\r\n"
        stream = _stuff(content)
        got, _ = _read_all(stream, [rng.randint(1, 600) for _ in stream])
        assert got == content


def test_large_mail_spills_and_is_stored_exactly(running) -> None:  # type: ignore[no-untyped-def]
    run = running()
    line = b"." + b"z" * 996 + b"\r\n"
    raw = b"Subject: big\r\n\r\n" + line * 1200  # 1.2 MB, every line dot-stuffed on the wire
    with run.client() as client:
        client.ehlo()
        client.mail("a@example.org")
        client.rcpt(RCPT)
        code, reply = client.data(raw)
    assert code == 250, reply
    item = Spool(run.settings.spool_dir).new / reply.decode().rsplit(" ", 1)[-1]
    assert item.read_bytes() == raw
    assert run.listener.budget.used == 0
    assert list(Spool(run.settings.spool_dir).tmp.iterdir()) == []  # the spill file had no name


def test_inflight_budget_answers_452_and_frees_on_finish(running) -> None:  # type: ignore[no-untyped-def]
    run = running(smtp={"max_inflight_bytes": 256 * 1024})
    block = (b"y" * 998 + b"\r\n") * 64
    hog = run.client()
    hog.ehlo()
    hog.mail("a@example.org")
    hog.rcpt(RCPT)
    assert hog.docmd("DATA")[0] == 354
    for _ in range(16):  # 1 MiB, unfinished: over the 256 KiB budget
        hog.send(block)
    with run.client() as small:  # a small mail is held in memory, outside the budget
        assert small.sendmail("a@example.org", [RCPT], b"Subject: s\r\n\r\nhi\r\n") == {}
        hog.send(b".\r\n")
        code, reply = hog.getreply()
        assert code == 452 and b"4.3.1" in reply
        assert hog.noop()[0] == 250  # the session goes on
        hog.close()
        small.mail("a@example.org")
        small.rcpt(RCPT)
        assert small.data(b"Subject: m\r\n\r\n" + block * 3)[0] == 250  # 192 KiB: fits now
    assert run.listener.budget.used == 0


def test_recipients_past_the_limit_get_452(running) -> None:  # type: ignore[no-untyped-def]
    run = running(smtp={"max_recipients": 3})
    with run.client() as client:
        client.ehlo()
        client.mail("a@example.org")
        codes = [client.rcpt(RCPT)[0] for _ in range(3)] + [client.rcpt(RCPT)[0]]
        assert codes == [250, 250, 250, 452]
        assert client.data(b"Subject: x\r\n\r\nhi\r\n")[0] == 250  # the accepted ones get it
        client.mail("a@example.org")  # a new mail counts afresh
        assert client.rcpt(RCPT)[0] == 250


def test_commands_past_the_limit_get_421_and_hang_up(running) -> None:  # type: ignore[no-untyped-def]
    run = running(smtp={"max_commands": 5})
    with run.client() as client:
        assert [client.noop()[0] for _ in range(5)] == [250] * 5
        assert client.noop()[0] == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def _first_lines(sock: Any, count: int, timeout: float = 20) -> list[bytes]:
    sock.settimeout(timeout)
    data = b""
    while data.count(b"\r\n") < count:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n")[:-1]


def test_idle_client_hears_421_then_the_close(running) -> None:  # type: ignore[no-untyped-def]
    import socket

    run = running(smtp={"timeout": 0.5})
    with socket.create_connection(("127.0.0.1", run.port), timeout=20) as sock:
        lines = _first_lines(sock, 3)
        assert lines[0].startswith(b"220") and lines[1].startswith(b"421 4.4.2")
        assert len(lines) == 2  # then EOF


def test_session_time_limit_ends_a_busy_session(running) -> None:  # type: ignore[no-untyped-def]
    run = running(smtp={"session_timeout": 1.0, "timeout": 30})
    started = time.monotonic()
    with run.client() as client:
        code = 250
        while code == 250 and time.monotonic() - started < 20:
            time.sleep(0.1)
            try:
                code = client.noop()[0]
            except smtplib.SMTPServerDisconnected:
                code = -1
    assert code in (421, -1) and 0.9 < time.monotonic() - started < 20


def test_connections_past_the_limit_get_421_and_one_log_line(running, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging
    import socket

    run = running(smtp={"max_connections": 2})
    with caplog.at_level(logging.INFO, logger="gateway"):
        kept = [run.client(), run.client()]
        refused = []
        for _ in range(50):
            with socket.create_connection(("127.0.0.1", run.port), timeout=20) as sock:
                refused.append(_first_lines(sock, 2))
        assert all(lines == [b"421 4.3.2 too many connections, try again later"]
                   for lines in refused)
        kept[0].quit()
        deadline = time.monotonic() + 20
        while run.listener.gate.active > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        with run.client() as client:  # room again
            assert client.noop()[0] == 250
        kept[1].quit()
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and "refused 1 connection" in lines[0].getMessage()
    assert run.listener.gate.refused.total == 50


def test_limits_must_be_positive(make_settings) -> None:  # type: ignore[no-untyped-def]
    for key in ("max_connections", "max_recipients", "max_commands", "max_inflight_bytes",
                "session_timeout"):
        settings = make_settings(smtp={"recipients": [RCPT], key: 0})
        with pytest.raises(ConfigError, match=rf"smtp\.{key}"):
            SmtpListener(settings, Spool(settings.spool_dir), lambda: None)


def test_client_leaving_mid_data_frees_everything(running, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    run = running()
    with caplog.at_level(logging.WARNING):
        client = run.client()
        client.ehlo()
        client.mail("a@example.org")
        client.rcpt(RCPT)
        assert client.docmd("DATA")[0] == 354
        client.send((b"w" * 998 + b"\r\n") * 300)  # 300 KB: spilled and charged
        deadline = time.monotonic() + 20
        while run.listener.budget.used == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert run.listener.budget.used > 0
        client.close()
        while run.listener.gate.active and time.monotonic() < deadline:
            time.sleep(0.01)
    assert run.listener.gate.active == 0 and run.listener.budget.used == 0
    assert list(Spool(run.settings.spool_dir).pending()) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class SlowSpool(Spool):
    """A real spool on a slow disk: each delivery starts half a second late."""

    def deliver(self, kind: str, data: Any) -> str:
        time.sleep(0.5)
        return super().deliver(kind, data)


def test_client_gone_while_its_mail_is_stored_leaves_it_whole(running, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spool = SlowSpool(tmp_path / "slow")
    spool.ensure()
    run = running(spool=spool)
    raw = b"Subject: big\r\n\r\n" + (b"v" * 998 + b"\r\n") * 300  # 300 KB: spilled
    client = run.client()
    client.ehlo()
    client.mail("a@example.org")
    client.rcpt(RCPT)
    assert client.docmd("DATA")[0] == 354
    client.send(raw + b".\r\n")
    deadline = time.monotonic() + 20
    while run.listener.budget.used == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    client.close()  # hang up before the 250: the session is cancelled mid-delivery
    while not spool.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    (item,) = spool.pending()
    assert item.read_bytes() == raw
    assert run.listener.budget.used == 0
