"""ZeroMQ PUB side: bind, send the two fedmsg frames, and make drops visible.

A plain PUB socket drops silently for a subscriber whose queue is full. We use
XPUB with ``XPUB_NODROP``: a send to a full subscriber fails with EAGAIN
instead. The publisher then waits up to ``hwm_wait_ms`` for it to catch up and
only after that sends lossily (the full subscriber misses this message, every
other one gets it) and counts a drop. The subscriber sees the seq_id gap and
repairs it by replay.
"""

from __future__ import annotations

import asyncio
import logging
import time

import zmq

from gateway.errors import BusgateError

log = logging.getLogger(__name__)


class BindError(BusgateError):
    """An endpoint could not be bound (port in use, bad address, permission)."""


def bind(socket: zmq.Socket, endpoint: str, what: str) -> None:
    try:
        socket.bind(endpoint)
    except zmq.ZMQError as exc:
        hint = " (is another busgate running?)" if exc.errno == zmq.EADDRINUSE else ""
        raise BindError(f"cannot bind the {what} socket to {endpoint}: {exc.strerror}{hint}") \
            from None


class ZmqPublisher:
    name = "zmq"

    def __init__(self, context: zmq.Context, endpoint: str, *, sndhwm: int = 10000,
                 hwm_wait_ms: int = 200):
        self.endpoint = endpoint
        self.hwm_wait = hwm_wait_ms / 1000
        self.sent = 0
        self.dropped = 0
        self.subscribers = 0
        # A plain (blocking-API) socket: every send is NOBLOCK, and EAGAIN must surface here.
        sock = zmq.Context.shadow(context.underlying).socket(zmq.XPUB)
        sock.setsockopt(zmq.SNDHWM, sndhwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        try:
            bind(sock, endpoint, "publish")
        except BindError:
            sock.close(0)
            raise
        self.socket = sock

    def try_send(self, topic: bytes, payload: bytes) -> bool:
        """Send without waiting; ``False`` when a subscriber is full (then use :meth:`send`)."""
        try:
            self.socket.send_multipart((topic, payload), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        self.sent += 1
        return True

    async def send(self, topic: bytes, payload: bytes) -> bool:
        deadline = None
        while True:
            try:
                self.socket.send_multipart((topic, payload), flags=zmq.NOBLOCK, copy=False)
                self.sent += 1
                return True
            except zmq.Again:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.hwm_wait
                if now >= deadline:
                    break
                self.drain_subscriptions()
                await asyncio.sleep(0.001)
        self.socket.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            self.socket.send_multipart((topic, payload), flags=zmq.NOBLOCK, copy=False)
        finally:
            self.socket.setsockopt(zmq.XPUB_NODROP, 1)
        self.sent += 1
        self.dropped += 1
        log.warning("a subscriber's queue stayed full for %.0f ms; it misses one message "
                    "and can replay it", self.hwm_wait * 1000)
        return False

    def send_now(self, topic: bytes, payload: bytes) -> None:
        """Send lossily at once (heartbeats: a missed one is replaced by the next)."""
        self.socket.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            self.socket.send_multipart((topic, payload), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
        finally:
            self.socket.setsockopt(zmq.XPUB_NODROP, 1)

    def drain_subscriptions(self) -> None:
        """Read (un)subscription notices so they never pile up; count subscriptions."""
        while True:
            try:
                notice = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if notice[:1] == b"\x01":
                self.subscribers += 1
            elif notice[:1] == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)

    def close(self) -> None:
        self.socket.close(0)
