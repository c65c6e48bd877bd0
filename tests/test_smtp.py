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
    def factory(**mail: Any) -> config.Settings:
        return make_settings(smtp={"enabled": True, "port": free_port(),
                                   "recipients": [RCPT, "Other@Busgate.Example"],
                                   "hostname": "busgate.test", "timeout": 20},
                             mail=mail or {})
    return factory


@pytest.fixture
def running(smtp_settings) -> Iterator[Callable[..., Running]]:  # type: ignore[no-untyped-def]
    started: list[Running] = []

    def start(spool: Any = None, **mail: Any) -> Running:
        settings = smtp_settings(**mail)
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
    settings = make_settings(smtp={"enabled": True, "port": free_port()})
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
