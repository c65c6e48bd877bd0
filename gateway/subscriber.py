"""Subscribe to publishers and hand back every message, in order, repairing gaps.

One SUB socket per publisher endpoint, so a message is always known to come
from a given endpoint. ``seq_id`` is tracked per publisher; a jump (in a live
message, or revealed by a heartbeat's ``last_seq_id``) is filled from that
publisher's replay endpoint before the live message is handed on. A message
whose ``seq_id`` was already seen is dropped, so a publisher's re-send after a
crash reaches the application once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from gateway import envelope as env
from gateway import heartbeat, replay
from gateway.discovery import Endpoint
from gateway.errors import EnvelopeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    topic: str
    envelope: dict[str, Any]
    endpoint: Endpoint
    replayed: bool = False

    @property
    def publisher(self) -> str:
        return str(self.envelope.get("publisher") or self.endpoint.name)

    @property
    def seq_id(self) -> int | None:
        return self.envelope.get("seq_id")

    @property
    def body(self) -> Any:
        return self.envelope.get("msg")


@dataclass
class Stats:
    received: int = 0
    replayed: int = 0
    duplicates: int = 0
    invalid: int = 0
    unrepaired: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)


class Subscriber:
    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        topics: Iterable[str] = (),
        exclude: Iterable[str] = (),
        heartbeat_topic: str | None = None,
        show_heartbeats: bool = False,
        resume_from: int | None = None,
        rcvhwm: int = 100000,
        replay_timeout: float = 5.0,
        context: zmq.Context | None = None,
    ):
        self.endpoints = list(endpoints)
        self.topics = [t for t in topics if t] or [""]
        self.exclude = tuple(exclude)
        self.show_heartbeats = show_heartbeats
        self.resume_from = resume_from
        self.replay_timeout = replay_timeout
        self.stats = Stats()
        self._context = context or zmq.Context.instance()
        self._poller = zmq.Poller()
        self._sockets: dict[zmq.Socket, Endpoint] = {}
        prefixes = list(self.topics)
        if heartbeat_topic and "" not in prefixes:
            prefixes.append(heartbeat_topic)
        for endpoint in self.endpoints:
            sock = self._context.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            for prefix in prefixes:
                sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
            sock.connect(endpoint.publish)
            self._poller.register(sock, zmq.POLLIN)
            self._sockets[sock] = endpoint

    def close(self) -> None:
        for sock in self._sockets:
            sock.close(0)
        self._sockets.clear()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Message]:
        return self.messages()

    def messages(self, count: int | None = None, timeout: float | None = None,
                 idle: float | None = None) -> Iterator[Message]:
        """Yield messages; stop after ``count``, after ``timeout`` seconds in all, or after
        ``idle`` seconds without a message."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        delivered = 0
        last_activity = time.monotonic()
        while count is None or delivered < count:
            now = time.monotonic()
            waits = [1000.0]
            if deadline is not None:
                waits.append((deadline - now) * 1000)
            if idle is not None:
                waits.append((last_activity + idle - now) * 1000)
            wait = min(waits)
            if wait <= 0:
                return
            for sock, _ in self._poller.poll(wait):
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    for message in self._accept(frames, self._sockets[sock]):
                        yield message
                        last_activity = time.monotonic()
                        delivered += 1
                        if count is not None and delivered >= count:
                            return

    # -- gap tracking ------------------------------------------------------------------
    def _accept(self, frames: list[bytes], endpoint: Endpoint) -> list[Message]:
        try:
            envelope = env.decode(frames)
        except EnvelopeError as exc:
            self.stats.invalid += 1
            log.warning("ignoring an invalid message from %s: %s", endpoint.publish, exc)
            return []
        publisher = str(envelope.get("publisher") or endpoint.name)
        if heartbeat.is_heartbeat(envelope):
            body = envelope.get("msg") or {}
            last = body.get("last_seq_id") if isinstance(body, dict) else None
            out = []
            if type(last) is int:
                out = self._catch_up(publisher, endpoint, last + 1)
            if self.show_heartbeats and self._wanted(envelope["topic"]):
                out.append(Message(envelope["topic"], envelope, endpoint))
            return out
        seq = envelope.get("seq_id")
        if type(seq) is not int:
            self.stats.received += 1
            return [Message(envelope["topic"], envelope, endpoint)] \
                if self._wanted(envelope["topic"]) else []
        seen = self.stats.last_seq.get(publisher, self.resume_from)
        if seen is not None and seq <= seen:
            self.stats.duplicates += 1
            return []
        out = self._catch_up(publisher, endpoint, seq) if seen is not None else []
        self.stats.last_seq[publisher] = seq
        self.stats.received += 1
        if self._wanted(envelope["topic"]):
            out.append(Message(envelope["topic"], envelope, endpoint))
        return out

    def _catch_up(self, publisher: str, endpoint: Endpoint, upto: int) -> list[Message]:
        """Fetch what this publisher sent between the last seen seq_id and ``upto``."""
        seen = self.stats.last_seq.get(publisher, self.resume_from)
        if seen is None or upto <= seen + 1:
            return []
        lo, hi = seen + 1, upto - 1
        if not endpoint.replay:
            self.stats.unrepaired += hi - lo + 1
            log.warning("%s: missed seq_id %d-%d and it has no replay endpoint", publisher, lo, hi)
            self.stats.last_seq[publisher] = hi
            return []
        request: dict[str, Any] = {"seq_id_range": [lo, hi]}
        if self.topics != [""]:
            request["topics"] = self.topics
        try:
            envelopes = replay.query(endpoint.replay, request, timeout=self.replay_timeout,
                                     context=self._context)
        except replay.ReplayError as exc:
            self.stats.unrepaired += hi - lo + 1
            log.warning("%s: cannot replay seq_id %d-%d: %s", publisher, lo, hi, exc)
            self.stats.last_seq[publisher] = hi
            return []
        out = []
        for envelope in sorted(envelopes, key=lambda e: e.get("seq_id", 0)):
            seq = envelope.get("seq_id")
            if type(seq) is not int or not lo <= seq <= hi:
                continue
            try:
                env.check(envelope)
            except EnvelopeError:
                self.stats.invalid += 1
                continue
            if self._wanted(envelope["topic"]):
                out.append(Message(envelope["topic"], envelope, endpoint, replayed=True))
        self.stats.replayed += len(out)
        self.stats.last_seq[publisher] = hi
        return out

    def _wanted(self, topic: str) -> bool:
        if not any(topic.startswith(p) for p in self.topics):
            return False
        return not any(topic.startswith(p) for p in self.exclude)
