"""A raw ZMTP 3.0 peer over a plain TCP socket, for hostile tests: it can send frames
no well-behaved libzmq socket would (oversize headers, endless multipart, floods)."""

from __future__ import annotations

import socket
import struct

GREETING = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") \
    + b"\x00" * 32
MORE, LONG, COMMAND = 0x01, 0x02, 0x04


def frame(body: bytes, *, more: bool = False, command: bool = False) -> bytes:
    flags = (MORE if more else 0) | (COMMAND if command else 0)
    if len(body) > 255:
        return bytes([flags | LONG]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def header(size: int, *, more: bool = False) -> bytes:
    """A long-frame header announcing ``size`` bytes (which need never follow)."""
    return bytes([(MORE if more else 0) | LONG]) + struct.pack(">Q", size)


def connect(url: str, socket_type: str, timeout: float = 5.0) -> socket.socket:
    """Open a TCP connection to a ``tcp://host:port`` endpoint and do the NULL handshake."""
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    name, value = b"Socket-Type", socket_type.encode()
    ready = b"\x05READY" + bytes([len(name)]) + name + struct.pack(">I", len(value)) + value
    sock.sendall(GREETING + frame(ready, command=True))
    return sock


def subscriptions(count: int, size: int = 100, start: int = 0) -> bytes:
    """``count`` distinct subscription messages (0x01 + topic) of ``size`` bytes each."""
    pad = b"x" * (size - 13)
    return b"".join(frame(b"\x01" + b"%012d" % (start + i) + pad) for i in range(count))


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the peer hangs up within ``timeout`` (reads and discards until EOF)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
