"""A real IRC server (Debian's ngircd) on 127.0.0.1 and a plain client that reads channels.

The reader is written on a bare socket, not on the library under test, so a bug there
cannot hide itself in the test's own client."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

NGIRCD = shutil.which("ngircd") or ("/usr/sbin/ngircd" if Path("/usr/sbin/ngircd").exists()
                                    else None)


class Ngircd:
    """``ngircd -n -f conf`` in the foreground on a free port; stop and start again."""

    def __init__(self, tmp_path: Path):
        from conftest import IN_CI, free_port

        if NGIRCD is None:
            message = "ngircd is not installed (apt-get install ngircd)"
            if IN_CI:
                pytest.fail(f"CI=true and {message}")
            pytest.skip(message)
        self.port = free_port()
        self.tls_port = free_port()
        self.dir = tmp_path / "ngircd"
        self.dir.mkdir()
        self.dir.chmod(0o755)  # ngircd reads its files as "nobody"
        _self_signed(self.dir)
        self.conf = self.dir / "ngircd.conf"
        self.log = self.dir / "ngircd.log"
        self.conf.write_text(f"""[Global]
Name = irc.busgate.test
Info = busgate test server
AdminInfo1 = busgate tests
AdminInfo2 = 127.0.0.1
AdminEMail = root@localhost
Listen = 127.0.0.1
Ports = {self.port}
MotdPhrase = busgate test server
PidFile = {self.dir}/ngircd.pid
[Limits]
MaxConnectionsIP = 0
PingTimeout = 120
PongTimeout = 20
[Options]
DNS = no
Ident = no
PAM = no
[SSL]
CertFile = {self.dir}/cert.pem
KeyFile = {self.dir}/key.pem
Ports = {self.tls_port}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Ngircd:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen([NGIRCD, "-n", "-f", str(self.conf)], stdout=handle,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        handle.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ngircd exited {self.proc.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"ngircd did not listen within 10 s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _self_signed(directory: Path) -> None:
    """A throwaway self-signed certificate for the server's TLS port."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "irc.busgate.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (directory / "key.pem").chmod(0o644)  # test-only key, read by ngircd as "nobody"


@dataclass
class Said:
    when: float
    nick: str
    target: str
    text: str


@dataclass
class Reader:
    """A client in some channels that records every PRIVMSG and JOIN it sees."""

    port: int
    nick: str
    channels: list[str]
    said: list[Said] = field(default_factory=list)
    joins: list[tuple[str, str]] = field(default_factory=list)
    registered: threading.Event = field(default_factory=threading.Event)
    in_channels: threading.Event = field(default_factory=threading.Event)

    def start(self, wait: bool = True) -> Reader:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.sock.settimeout(0.2)
        self._send(f"NICK {self.nick}")
        self._send(f"USER {self.nick} 0 * :test reader")
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        if wait:
            self.wait_joined()
        return self

    def wait_joined(self) -> None:
        assert self.in_channels.wait(10), f"{self.nick} could not join {self.channels}"

    def _send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def _loop(self) -> None:
        buffer = b""
        joined: set[str] = set()
        while not self.stopping:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            buffer += data
            *lines, buffer = buffer.split(b"\r\n")
            for raw in lines:
                text = raw.decode("utf-8", "replace")
                prefix = ""
                if text.startswith(":"):
                    prefix, _, text = text[1:].partition(" ")
                command, _, rest = text.partition(" ")
                nick = prefix.split("!", 1)[0]
                if command == "PING":
                    self._send(f"PONG {rest}")
                elif command == "001":
                    self.registered.set()
                    self._send("JOIN " + ",".join(self.channels))
                elif command == "JOIN":
                    channel = rest.lstrip(":").lower()
                    if nick == self.nick:
                        joined.add(channel)
                        if joined >= {c.lower() for c in self.channels}:
                            self.in_channels.set()
                    else:
                        self.joins.append((nick, channel))
                elif command == "PRIVMSG":
                    target, _, message = rest.partition(" :")
                    self.said.append(Said(time.monotonic(), nick, target.lower(), message))

    def lines(self, channel: str) -> list[Said]:
        return [s for s in list(self.said) if s.target == channel.lower()]

    def wait_for(self, predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return bool(predicate())

    def close(self) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):
            self._send("QUIT :bye")
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def ngircd(tmp_path: Path):
    server = Ngircd(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def reader(ngircd: Ngircd):
    """Factory: ``reader(nick, channels)`` joined and recording."""
    made: list[Reader] = []

    def factory(nick: str, channels: list[str], port: int | None = None,
                wait: bool = True) -> Reader:
        client = Reader(port or ngircd.port, nick, channels).start(wait)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()
