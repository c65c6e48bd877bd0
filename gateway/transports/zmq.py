"""ZeroMQ PUB side: bind, send the two fedmsg frames, and make drops visible.

A plain PUB socket drops silently for a subscriber whose queue is full. We use
XPUB with ``XPUB_NODROP``: a send to a full subscriber fails with EAGAIN
instead. The publisher then waits up to ``hwm_wait_ms`` for it to catch up and
only after that sends lossily (the full subscriber misses this message, every
other one gets it) and counts a drop. The subscriber sees the seq_id gap and
repairs it by replay.

After that lossy send libzmq parks the full subscriber's pipe and skips it,
silently, until its reader has drained it. So the stalled connection (the one
with the most unsent bytes in the kernel) is remembered as lagging, and every
message sent while it lags counts as dropped for it, until its kernel send
queue is empty (its pipe was drained, libzmq feeds it again) or it is gone:
``dropped`` counts messages, not episodes.

Inbound, a subscriber can only send subscriptions: frames over
``max_subscription_bytes`` are refused by libzmq before allocation
(``ZMQ_MAXMSGSIZE``), and :class:`~gateway.transports.peers.PeerGuard` hangs
up on a subscriber that sends more subscription bytes than allowed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import zmq

from gateway.errors import BusgateError
from gateway.transports.peers import PeerGuard, PeerLimits

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
                 hwm_wait_ms: int = 200, max_subscription_bytes: int = 1024,
                 peer_limits: PeerLimits | None = None):
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
        sock.setsockopt(zmq.MAXMSGSIZE, max_subscription_bytes)
        # Few subscriptions in flight per subscriber: libzmq moves them into its trie in
        # batches of this many on each of our calls, so a flood grows it slowly between two
        # guard checks (a subscriber sends a handful; they still flow at once).
        sock.setsockopt(zmq.RCVHWM, 2)
        self.guard = PeerGuard(sock, peer_limits or PeerLimits(max_bytes=16384), "publish")
        try:
            bind(sock, endpoint, "publish")
        except BindError:
            self.guard.close()
            sock.close(0)
            raise
        self.socket = sock
        self._lagging: dict[int, float] = {}  # fd -> when its send queue was last checked

    def try_send(self, topic: bytes, payload: bytes) -> bool:
        """Send without waiting; ``False`` when a subscriber is full (then use :meth:`send`)."""
        try:
            self.socket.send_multipart((topic, payload), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        self.sent += 1
        if self._lagging:
            self._count_lagging()
        return True

    def _count_lagging(self) -> None:
        """This message skipped every lagging subscriber: count it once for each."""
        now = time.monotonic()
        for fd, checked in list(self._lagging.items()):
            if now - checked >= 0.01:
                backlog = self.guard.backlog(fd)
                if not backlog:  # drained (libzmq feeds it again) or gone
                    del self._lagging[fd]
                    continue
                self._lagging[fd] = now
        self.dropped += len(self._lagging)

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
        stalled = self.guard.most_backlogged()
        self.socket.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            self.socket.send_multipart((topic, payload), flags=zmq.NOBLOCK, copy=False)
        finally:
            self.socket.setsockopt(zmq.XPUB_NODROP, 1)
        self.sent += 1
        self.dropped += 1
        if stalled is not None and stalled not in self._lagging:
            self._lagging[stalled] = time.monotonic()
            log.warning("a subscriber's queue stayed full for %.0f ms; it misses messages "
                        "until it has caught up, and can replay them", self.hwm_wait * 1000)
        return False

    def send_now(self, topic: bytes, payload: bytes) -> None:
        """Send lossily at once (heartbeats: a missed one is replaced by the next). The
        pending subscription notices are read first, so a subscriber that just joined
        gets it."""
        self.drain_subscriptions()
        self.socket.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            self.socket.send_multipart((topic, payload), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
        finally:
            self.socket.setsockopt(zmq.XPUB_NODROP, 1)

    def drain_subscriptions(self, most: int = 1000) -> None:
        """Read (un)subscription notices so they never pile up; count subscriptions.

        At most ``most`` at a time: under a flood every read lets libzmq take in more.
        """
        for _ in range(most):
            try:
                notice = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if notice[:1] == b"\x01":
                self.subscribers += 1
            elif notice[:1] == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)

    def guard_peers(self) -> None:
        """Hang up on subscribers over their limits, then take in a few more notices.

        Each read lets libzmq move more subscriptions into its trie, so a tick reads few
        (legitimate subscribers send a handful) and checks the limits first.
        """
        self.guard.check()
        self.drain_subscriptions(most=128)

    def close(self) -> None:
        self.guard.close()
        self.socket.close(0)
