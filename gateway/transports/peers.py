"""Bound what remote peers can make a bound ZeroMQ socket hold, by hanging up on them.

libzmq keeps every subscription a peer sends in a trie (XPUB), and buffers a
multipart message until its last frame arrives (ROUTER, XPUB); neither has a
count or byte limit, and nothing in its API closes one accepted connection.
So this guard watches the socket's accepted TCP connections (socket monitor
events carry their file descriptors), reads how many bytes the kernel received
on each (``TCP_INFO``), and shuts down a connection that sent more than its
allowance, or the newest ones past ``max_peers``. libzmq then tears the
connection down and frees what it held for it (its subscriptions, its partial
message). ``ZMQ_MAXMSGSIZE`` refuses one oversize frame before allocation;
this bounds the sum.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import struct
import termios
import time
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger(__name__)

#: Offset of ``tcpi_bytes_received`` (u64) in Linux's ``struct tcp_info`` (since 4.1).
_BYTES_RECEIVED = 128
_TCP_INFO_LEN = 136


@dataclass
class _Peer:
    sock: socket.socket
    since: float
    received: int = 0


@dataclass(frozen=True)
class PeerLimits:
    #: Bytes one connection may send before it is hung up on (greeting and handshake included).
    max_bytes: int
    #: Extra bytes allowed per second of connection age (ZMTP heartbeats, re-subscriptions).
    bytes_per_second: int = 0
    #: Sum over all connections; past it, the connections that sent most are hung up on.
    max_total_bytes: int = 0
    #: Connections at once; past it, the newest are hung up on.
    max_peers: int = 1000


class PeerGuard:
    """Track a bound socket's TCP peers and hang up on those over their limits."""

    def __init__(self, target: zmq.Socket, limits: PeerLimits, what: str):
        self.limits = limits
        self.what = what
        self.kicked = 0
        self._peers: dict[int, _Peer] = {}
        self._last_warning = 0.0
        # A blocking-API PAIR even when ``target`` is an asyncio socket: read with NOBLOCK.
        address = f"inproc://busgate-peers-{id(self)}"
        target.monitor(address, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED)
        self._target = target
        self._monitor = zmq.Context.shadow(target.context.underlying).socket(zmq.PAIR)
        self._monitor.connect(address)

    @property
    def peers(self) -> int:
        return len(self._peers)

    def fds(self) -> list[int]:
        """The connected peers' file descriptors (their ids here)."""
        self._events()
        return list(self._peers)

    def check(self) -> int:
        """Read monitor events, then hang up on peers over their limits; return how many."""
        self._events()
        now = time.monotonic()
        over: list[int] = []
        total = 0
        for fd, peer in self._peers.items():
            peer.received = _bytes_received(peer.sock)
            total += peer.received
            allowance = self.limits.max_bytes + self.limits.bytes_per_second * (now - peer.since)
            if peer.received > allowance:
                over.append(fd)
        if self.limits.max_total_bytes and total > self.limits.max_total_bytes:
            for fd, peer in sorted(self._peers.items(), key=lambda kv: -kv[1].received):
                if total <= self.limits.max_total_bytes:
                    break
                if fd not in over:
                    over.append(fd)
                total -= peer.received
        if len(self._peers) - len(over) > self.limits.max_peers:
            newest = sorted((fd for fd in self._peers if fd not in over),
                            key=lambda fd: -self._peers[fd].since)
            over += newest[:len(self._peers) - len(over) - self.limits.max_peers]
        for fd in over:
            self._hang_up(fd)
        return len(over)

    def backlog(self, fd: int) -> int:
        """Bytes queued in the kernel towards this peer (0 once it is gone)."""
        self._events()
        peer = self._peers.get(fd)
        if peer is None:
            return 0
        try:
            return struct.unpack("i", fcntl.ioctl(peer.sock.fileno(), termios.TIOCOUTQ,
                                                  b"\0\0\0\0"))[0]
        except OSError:
            return 0

    def most_backlogged(self) -> int | None:
        """The connection with the most bytes waiting in the kernel (a stalled reader)."""
        self._events()
        backlogs = {fd: self.backlog(fd) for fd in self._peers}
        fd = max(backlogs, key=backlogs.__getitem__, default=None)
        return fd if fd is not None and backlogs[fd] > 0 else None

    def _events(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._forget(fd)
                try:
                    dup = socket.socket(fileno=os.dup(fd))
                except OSError:  # already closed again; its DISCONNECTED event follows
                    continue
                self._peers[fd] = _Peer(dup, time.monotonic())
            else:
                self._forget(fd)

    def _hang_up(self, fd: int) -> None:
        peer = self._peers.get(fd)
        if peer is None:
            return
        with contextlib.suppress(OSError):
            address = peer.sock.getpeername()
            peer.sock.shutdown(socket.SHUT_RDWR)
            self.kicked += 1
            now = time.monotonic()
            if now - self._last_warning > 10:  # a flood must not flood the log too
                self._last_warning = now
                log.warning("%s: hung up on %s after %d bytes (limit %d; %d hung up so far)",
                            self.what, address, peer.received, self.limits.max_bytes,
                            self.kicked)
        self._forget(fd)

    def _forget(self, fd: int) -> None:
        peer = self._peers.pop(fd, None)
        if peer is not None:
            peer.sock.close()

    def close(self) -> None:
        for fd in list(self._peers):
            self._forget(fd)
        with contextlib.suppress(zmq.ZMQError):
            self._target.disable_monitor()
        self._monitor.close(0)


def _bytes_received(sock: socket.socket) -> int:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return 0
    if len(info) < _TCP_INFO_LEN:
        return 0
    return struct.unpack_from("Q", info, _BYTES_RECEIVED)[0]
