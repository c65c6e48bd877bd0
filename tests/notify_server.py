"""Test-only: a private session bus (``dbus-run-session``) and a notification server on it.

:class:`SessionBus` starts ``dbus-run-session`` around a child that prints the bus
address and waits for its stdin to close, so the bus (and its daemon) end with the test
even when the test process dies. :class:`NotificationServer` owns
``org.freedesktop.Notifications`` on that bus from a thread, answers ``Notify``,
``GetCapabilities`` and ``GetServerInformation`` like a desktop's server, and records
each ``Notify`` call for the test to inspect.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import IN_CI

SERVICE = "org.freedesktop.Notifications"


def require_dbus() -> str:
    """``dbus-run-session``'s path; skip (locally) or fail (CI) without it."""
    path = shutil.which("dbus-run-session")
    if path is None:
        message = ("dbus-run-session is not installed (Debian package 'dbus-daemon': "
                   "apt-get install -y dbus)")
        if IN_CI:
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    return path


class SessionBus:
    """A private session bus for one test."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [require_dbus(), "--", sys.executable, "-c",
             "import os, sys; print(os.environ['DBUS_SESSION_BUS_ADDRESS'], flush=True); "
             "sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            self.close()
            raise RuntimeError("dbus-run-session did not start a bus")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SESSION_BUS_ADDRESS": self.address}

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the child exits, dbus-run-session ends the daemon
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Call:
    app_name: str
    replaces: int
    summary: str
    body: str
    urgency: int | None
    expire_ms: int


class NotificationServer:
    """Owns ``org.freedesktop.Notifications`` on ``address`` and records Notify calls."""

    def __init__(self, address: str, capabilities: tuple[str, ...] = ("body",)):
        from jeepney.bus_messages import message_bus
        from jeepney.io.blocking import open_dbus_connection

        self.capabilities = list(capabilities)
        #: While set, Notify calls are recorded but never answered (a hung server).
        self.mute = False
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.conn = open_dbus_connection(bus=address)
        reply = self.conn.send_and_get_reply(message_bus.RequestName(SERVICE, 4), timeout=5)
        assert reply.body[0] == 1, f"could not own {SERVICE}: {reply.body}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        from jeepney import MessageType, new_error, new_method_return
        from jeepney.low_level import HeaderFields

        next_id = 0
        while not self._stop.is_set():
            try:
                msg = self.conn.receive(timeout=0.1)
            except TimeoutError:
                continue
            except OSError:
                return
            if msg.header.message_type != MessageType.method_call:
                continue
            member = msg.header.fields.get(HeaderFields.member)
            if member == "Notify":
                app, replaces, _icon, summary, body, _actions, hints, expire = msg.body
                urgency = hints.get("urgency")
                with self.lock:
                    self.calls.append(Call(app, replaces, summary, body,
                                           urgency[1] if urgency else None, expire))
                if self.mute:
                    continue
                next_id += 1
                answer = new_method_return(msg, "u", (replaces or next_id,))
            elif member == "GetCapabilities":
                answer = new_method_return(msg, "as", (self.capabilities,))
            elif member == "GetServerInformation":
                answer = new_method_return(msg, "ssss", ("test", "busgate", "0", "1.2"))
            else:
                answer = new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod")
            self.conn.send(answer)

    def snapshot(self) -> list[Call]:
        with self.lock:
            return list(self.calls)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = self.snapshot()
            if len(calls) >= count:
                return calls
            time.sleep(0.02)
        return self.snapshot()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.close()


def server_info(calls: list[Any]) -> list[tuple[str, str, int | None]]:
    return [(c.summary, c.body, c.urgency) for c in calls]
