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
queue has stayed empty for :data:`UNLAG_QUIET` seconds (its pipe was drained,
libzmq feeds it again) or it is gone: ``dropped`` counts messages, not
episodes, and never fewer than were missed. When no connection has unsent bytes
yet at the lossy send (the stalled reader's kernel buffers still had room),
every connection is suspected: one that never shows a backlog is cleared at its
first check, 10 ms later (a few messages over-counted, none missed uncounted).

Inbound, a subscriber can only send subscriptions: frames over
``max_subscription_bytes`` are refused by libzmq before allocation
(``ZMQ_MAXMSGSIZE``), and :class:`~gateway.transports.peers.PeerGuard` hangs
up on a subscriber that sends more subscription bytes than allowed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence

import zmq

from gateway.errors import BusgateError
from gateway.transports.peers import PeerGuard, PeerLimits

log = logging.getLogger(__name__)


#: Seconds a lagging subscriber's kernel send queue must stay empty before it counts as
#: caught up: an empty queue for a moment does not mean libzmq feeds its pipe again.
UNLAG_QUIET = 0.05
#: Seconds between two looks at a lagging subscriber's kernel send queue.
LAG_CHECK = 0.01
#: Flags of a message's first frame. libzmq checks the high-water mark per whole message
#: (a pipe counts messages, not frames), so once the first frame is taken the last is too.
_MORE = zmq.SNDMORE | zmq.NOBLOCK


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
        # fd -> [when its send queue was last checked, when it last held bytes (0: never)]
        self._lagging: dict[int, list[float]] = {}

    def try_send(self, topic: bytes, payload: bytes) -> bool:
        """Send without waiting; ``False`` when a subscriber is full (then use :meth:`send`)."""
        try:
            self.socket.send(topic, _MORE)  # the HWM is checked here: the 2nd frame goes too
        except zmq.Again:
            return False
        self.socket.send(payload, zmq.NOBLOCK)
        self.sent += 1
        if self._lagging:
            self._count_lagging()
        return True

    def try_send_many(self, rows: Sequence[tuple[int, bytes, bytes]], start: int = 0) -> int:
        """Send ``(seq_id, topic, payload)`` rows from ``start`` on, in order, without waiting,
        until one would wait; returns how many went (then :meth:`send` the next one).

        Two plain sends a message in one loop: ``send_multipart`` (its checks of every
        frame) and a call per message took ~2.5x the CPU of the two sends themselves
        (12 against 4.7 µs a 2.2 KB message, measured on the loaded 2-core machine). While
        a subscriber lags, each message is counted for it, so they go one at a time
        through :meth:`try_send`."""
        position = start
        if self._lagging:
            while position < len(rows) and self.try_send(rows[position][1], rows[position][2]):
                position += 1
            return position - start
        send, more, last = self.socket.send, _MORE, zmq.NOBLOCK
        try:
            for _, topic, payload in itertools.islice(rows, start, None):
                send(topic, more)  # EAGAIN comes here or not at all (see try_send)
                send(payload, last)
                position += 1
        except zmq.Again:
            pass
        self.sent += position - start
        return position - start

    def _count_lagging(self) -> None:
        """This message skipped every lagging subscriber: count it once for each."""
        now = time.monotonic()
        for fd, lag in list(self._lagging.items()):
            if now - lag[0] >= LAG_CHECK:
                lag[0] = now
                if self.guard.backlog(fd):
                    lag[1] = now
                elif not lag[1] or now - lag[1] >= UNLAG_QUIET:  # drained, or gone
                    del self._lagging[fd]
        self.dropped += len(self._lagging)

    async def send(self, topic: bytes, payload: bytes) -> bool:
        deadline = None
        while True:
            try:
                self.socket.send_multipart((topic, payload), flags=zmq.NOBLOCK)
                self.sent += 1
                if self._lagging:  # the wait was for another subscriber: lagging ones miss it
                    self._count_lagging()
                return True
            except zmq.Again:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.hwm_wait
                if now >= deadline:
                    break
                self.drain_subscriptions()
                await asyncio.sleep(0.001)
        self._send_lossy(topic, payload)
        self.sent += 1
        self.dropped += 1
        return False

    def _send_lossy(self, topic: bytes, payload: bytes) -> None:
        """Send even though a subscriber is full (it misses this message), and remember
        who lags: libzmq now skips that subscriber silently until it has drained."""
        stalled = self.guard.most_backlogged()
        self.socket.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            self.socket.send_multipart((topic, payload), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
        finally:
            self.socket.setsockopt(zmq.XPUB_NODROP, 1)
        now = time.monotonic()
        suspects = [stalled] if stalled is not None else self.guard.fds()
        fresh = [fd for fd in suspects if fd not in self._lagging]
        for fd in fresh:
            self._lagging[fd] = [now, now if fd == stalled else 0.0]
        if stalled is not None and stalled in fresh:
            log.warning("a subscriber's queue stayed full for %.0f ms; it misses messages "
                        "until it has caught up, and can replay them", self.hwm_wait * 1000)

    def send_now(self, topic: bytes, payload: bytes) -> None:
        """Send at once (heartbeats: a missed one is replaced by the next). The pending
        subscription notices are read first, so a subscriber that just joined gets it. A
        full subscriber misses it, and is then remembered as lagging like after
        :meth:`send`: the lossy send makes libzmq skip it for the stored messages that
        follow too."""
        self.drain_subscriptions()
        try:
            self.socket.send_multipart((topic, payload), flags=zmq.NOBLOCK)
        except zmq.Again:
            self._send_lossy(topic, payload)

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
