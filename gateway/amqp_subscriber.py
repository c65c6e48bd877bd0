"""Consume busgate's messages from a named durable RabbitMQ queue, acking each only
after its callback returned.

The ZeroMQ :class:`~gateway.subscriber.Subscriber` repairs gaps by replay; here the
broker keeps what a consumer has not acknowledged (a durable queue outlives the
consumer, a message unacked when it dies is delivered again), so there is no seq_id
tracking: a message may come twice after a failure (same ``msg_id``), never not at all.
Messages come out as envelopes (:func:`~gateway.transports.amqp_wire.from_amqp`), so
one callback serves both transports.

Bounds: at most ``amqp.prefetch`` unacknowledged messages are sent to us; a body over
``amqp.max_message_bytes`` or one that is not a JSON object is rejected without
requeue (the queue's dead-letter exchange gets it, if it has one) and said on stderr.

With a ``verifier`` (``verify.from_settings(settings.signing)``) every message is
rebuilt into the envelope its publisher signed and checked like a ZeroMQ one: an
unsigned, badly signed, out-of-policy or stale message is rejected without requeue,
counted by reason in :attr:`AmqpSubscriber.rejected_by` and given to ``on_reject``.
A message waits in a durable queue, so ``signing.max_age`` must cover the longest
time a consumer may be away (older ones are refused as ``stale``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.config import AmqpSettings
from gateway.transports.amqp import open_connection
from gateway.transports.amqp_wire import WireError, from_amqp

if TYPE_CHECKING:
    from gateway.verify import SignatureError, Verifier

log = logging.getLogger(__name__)

#: Called with (envelope, error) for each message the verifier refused.
RejectHook = Callable[[dict[str, Any], "SignatureError"], object]


@dataclass
class Received:
    envelope: dict[str, Any]
    #: The broker delivered it before (to us or another consumer) without an ack.
    redelivered: bool = False

    @property
    def replayed(self) -> bool:  # the ZeroMQ Subscriber's name for "came again"
        return self.redelivered


def bindings(topics: Sequence[str]) -> list[str]:
    """Routing keys to bind for topic prefixes: the topic itself and everything below
    it (a prefix ending inside a token binds everything; the client filters)."""
    if not topics:
        return ["#"]
    keys: list[str] = []
    for topic in topics:
        topic = topic.rstrip(".")
        if not topic or "*" in topic or "#" in topic:
            return ["#"]
        keys += [topic, f"{topic}.#"]
    return keys


class AmqpSubscriber:
    """Iterate over (or call back for) the messages of one durable queue."""

    def __init__(self, conf: AmqpSettings, queue: str, *, topics: Sequence[str] = (),
                 exclude: Sequence[str] = (), verifier: Verifier | None = None,
                 on_reject: RejectHook | None = None):
        self.conf = conf
        self.queue = queue
        self.topics = tuple(topics)
        self.exclude = tuple(exclude)
        self.verifier = verifier
        self.on_reject = on_reject
        #: Messages rejected in all (bad bodies and refused signatures).
        self.rejected = 0
        #: Messages the verifier refused, by reason (``gateway.verify.REASONS``).
        self.rejected_by: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._inbox: asyncio.Queue[Any] | None = None
        self._connection: Any = None
        self._channel: Any = None
        self._unacked: int | None = None

    # -- set-up ------------------------------------------------------------------------
    def __enter__(self) -> AmqpSubscriber:
        self._loop.run_until_complete(self._open())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _open(self) -> None:
        self._inbox = asyncio.Queue()
        self._connection = await open_connection(self.conf)
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.basic_qos(prefetch_count=self.conf.prefetch)
        if self.conf.passive:  # the operator owns the queue and its bindings
            await channel.queue_declare(self.queue, passive=True)
        else:
            await channel.queue_declare(self.queue, durable=True)
            for key in bindings(self.topics):
                await channel.queue_bind(self.queue, self.conf.exchange, routing_key=key)
        await channel.basic_consume(self.queue, self._inbox.put)
        self._channel = channel

    def close(self) -> None:
        """Close; a message handed out and not acked yet goes back to the queue."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            self._loop.run_until_complete(_quietly(connection.close()))
        _end_tasks(self._loop)
        self._loop.close()

    # -- consuming ----------------------------------------------------------------------
    def messages(self, count: int | None = None,
                 timeout: float | None = None) -> Iterator[Received]:
        """Yield messages; each is acked when the caller asks for the next one (or the
        iteration ends), that is after the caller has handled it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        given = 0
        try:
            while count is None or given < count:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                delivery = self._loop.run_until_complete(self._next(left))
                if delivery is None:
                    return
                received = self._accept(delivery)
                if received is None:
                    continue
                self._unacked = delivery.delivery_tag
                yield received
                self._ack()
                given += 1
        finally:
            self._ack()

    def consume(self, callback: Callable[[dict[str, Any]], object], *,
                count: int | None = None, timeout: float | None = None) -> int:
        """Call ``callback(envelope)`` per message, ack after it returned; an exception
        requeues the message and propagates. Returns how many were handled."""
        handled = 0
        iterator = self.messages(count=count, timeout=timeout)
        for received in iterator:
            try:
                callback(received.envelope)
            except BaseException:
                self._nack(requeue=True)
                iterator.close()
                raise
            handled += 1
        return handled

    async def _next(self, timeout: float | None) -> Any:
        assert self._inbox is not None
        try:  # not wait_for: it can lose a cancel (gateway.wakeup)
            async with asyncio.timeout(timeout):
                return await self._inbox.get()
        except TimeoutError:
            return None

    def _accept(self, delivery: Any) -> Received | None:
        body = delivery.body
        props = delivery.header.properties
        if len(body) > self.conf.max_message_bytes:
            return self._reject(delivery, f"{len(body)} bytes, over amqp.max_message_bytes "
                                          f"({self.conf.max_message_bytes})")
        try:
            envelope = from_amqp(delivery.routing_key, body, props.message_id,
                                 props.headers or {})
        except WireError as exc:
            return self._reject(delivery, str(exc))
        topic = envelope["topic"]
        if (self.topics and not topic.startswith(self.topics)) or (
                self.exclude and topic.startswith(self.exclude)):
            self._loop.run_until_complete(self._channel.basic_ack(delivery.delivery_tag))
            return None
        if self.verifier is not None and not self._verified(envelope, delivery):
            return None
        return Received(envelope, redelivered=bool(delivery.delivery.redelivered))

    def _verified(self, envelope: dict[str, Any], delivery: Any) -> bool:
        """Whether the verifier accepts ``envelope``; a refusal is counted by reason,
        handed to ``on_reject`` and rejected without requeue."""
        from gateway.verify import SignatureError

        assert self.verifier is not None
        try:
            self.verifier.check(envelope)
            return True
        except SignatureError as exc:
            self.rejected += 1
            self.rejected_by[exc.reason] = self.rejected_by.get(exc.reason, 0) + 1
            if self.on_reject is not None:
                self.on_reject(envelope, exc)
            else:
                log.warning("rejected %s from queue %s: %s", envelope.get("topic"),
                            self.queue, exc)
            self._loop.run_until_complete(
                self._channel.basic_reject(delivery.delivery_tag, requeue=False))
            return False

    def _reject(self, delivery: Any, why: str) -> None:
        self.rejected += 1
        print(f"busgate: rejected message {delivery.header.properties.message_id} on "
              f"{delivery.routing_key} from queue {self.queue}: {why}", file=sys.stderr)
        self._loop.run_until_complete(
            self._channel.basic_reject(delivery.delivery_tag, requeue=False))
        return None

    def _ack(self) -> None:
        tag, self._unacked = self._unacked, None
        if tag is not None and self._channel is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self._channel.basic_ack(tag))

    def _nack(self, requeue: bool) -> None:
        tag, self._unacked = self._unacked, None
        if tag is not None and self._channel is not None:
            self._loop.run_until_complete(self._channel.basic_nack(tag, requeue=requeue))


def _end_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel and finish the tasks still in ``loop``, as ``asyncio.run`` does before it
    closes its loop: a closed aiormq connection leaves one (its writer's close), and a
    loop closed under it prints "Task was destroyed but it is pending!" on stderr."""
    pending = asyncio.all_tasks(loop)
    if not pending:
        return
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


async def _quietly(awaitable: Any) -> None:
    try:
        async with asyncio.timeout(5):  # not wait_for: it can lose a cancel (wakeup.py)
            await awaitable
    except Exception as exc:  # closing a broken connection: nothing to keep
        log.debug("closing the AMQP consumer: %s", exc)
