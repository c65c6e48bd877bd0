"""AMQP 0-9-1 (RabbitMQ) side: connect, declare or check the topology, publish with
confirms, keep what no queue wants.

Built on aiormq: asyncio-native like the daemon's loop, small (pamqp + yarl), and
its ``basic_publish`` returns the broker's confirm for that one message, so many
publishes can be in flight at once (pipelined confirms) without a thread per
connection (pika) or a Twisted reactor (fedora-messaging). aio-pika adds a
robust-connection layer on top of it that would hide exactly what busgate must see
(which messages were confirmed before a connection died), so busgate reconnects
itself (:mod:`gateway.amqp_outbox`).

Every message is published ``mandatory``. RabbitMQ returns one that no queue is
bound for (``amq.topic`` cannot carry an alternate-exchange argument without an
operator policy); the transport then publishes it to ``alternate_exchange``
(fanout) bound to the durable ``unroutable_queue``, and only that second confirm
lets the cursor pass it. An exchange busgate declares itself also gets the
alternate exchange as its ``alternate-exchange`` argument (the broker routes there
directly, nothing comes back).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from collections.abc import Sequence
from typing import Any

import aiormq
import pamqp.frame
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.header import ContentHeader

from gateway.config import AmqpSettings
from gateway.errors import BusgateError
from gateway.transports import amqp_frames
from gateway.transports.amqp_wire import WireMessage

log = logging.getLogger(__name__)

#: Errors that mean "the connection or channel is gone": reconnect and resend.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError, ConnectionError, OSError, asyncio.TimeoutError,
    RuntimeError)


class AmqpError(BusgateError):
    """The broker refused something busgate needs (topology, a publish)."""


def broker_url(conf: AmqpSettings) -> str:
    """``conf.url`` with ``conf.vhost`` (when set) and the heartbeat in it."""
    parts = urllib.parse.urlsplit(conf.url)
    path = parts.path
    if conf.vhost:
        path = "/" + urllib.parse.quote(conf.vhost, safe="")
    query = dict(urllib.parse.parse_qsl(parts.query))
    query["heartbeat"] = str(conf.heartbeat)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path,
                                    urllib.parse.urlencode(query), ""))


def tls_context(conf: AmqpSettings) -> ssl.SSLContext | None:
    """The TLS context of an ``amqps://`` URL (verifying the broker), else None."""
    if not conf.url.startswith("amqps://"):
        return None
    context = ssl.create_default_context(cafile=conf.tls_ca_file or None)
    if conf.tls_cert_file:
        context.load_cert_chain(conf.tls_cert_file, conf.tls_key_file or None)
    return context


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


async def open_connection(conf: AmqpSettings) -> aiormq.abc.AbstractConnection:
    """Connect within ``connect_timeout`` (TCP, TLS, handshake). Every wait here is
    under ``asyncio.timeout``, not ``wait_for``, which can lose a cancel on Python 3.11
    (gateway/wakeup.py)."""
    async with asyncio.timeout(conf.connect_timeout):
        return await aiormq.connect(broker_url(conf), context=tls_context(conf),
                                    client_properties={"connection_name": "busgate"})


class AmqpTransport:
    """One connection and one confirming channel to the broker."""

    name = "amqp"

    def __init__(self, conf: AmqpSettings):
        self.conf = conf
        self.connection: aiormq.abc.AbstractConnection | None = None
        self.channel: aiormq.abc.AbstractChannel | None = None

    async def connect(self) -> None:
        """Connect, open a confirming channel and declare (or check) the topology."""
        await self.close()
        connection = await open_connection(self.conf)
        try:
            async with asyncio.timeout(self.conf.connect_timeout):
                channel = await connection.channel(publisher_confirms=True,
                                                   on_return_raises=True)
            async with asyncio.timeout(self.conf.connect_timeout):
                await self._topology(channel)
        except BaseException:
            await connection.close()
            raise
        self.connection, self.channel = connection, channel

    async def _topology(self, channel: aiormq.abc.AbstractChannel) -> None:
        conf = self.conf
        passive = conf.passive
        try:
            await channel.exchange_declare(conf.alternate_exchange, exchange_type="fanout",
                                           durable=True, passive=passive)
            await channel.queue_declare(conf.unroutable_queue, durable=True, passive=passive)
            if not passive:
                await channel.queue_bind(conf.unroutable_queue, conf.alternate_exchange,
                                         routing_key="")
            if conf.exchange.startswith("amq.") or passive:
                # Predefined exchanges cannot be redeclared with arguments; check them.
                await channel.exchange_declare(conf.exchange, passive=True)
            else:
                await channel.exchange_declare(
                    conf.exchange, exchange_type="topic", durable=True,
                    arguments={"alternate-exchange": conf.alternate_exchange})
        except aiormq.exceptions.ChannelClosed as exc:
            what = "checking" if passive else "declaring"
            raise AmqpError(f"{what} the AMQP topology failed (exchange {conf.exchange!r}, "
                            f"alternate exchange {conf.alternate_exchange!r}, queue "
                            f"{conf.unroutable_queue!r}): {exc}") from None

    @property
    def is_open(self) -> bool:
        return self.connection is not None and not self.connection.is_closed \
            and self.channel is not None and not self.channel.is_closed

    async def publish_batch(self, batch: Sequence[WireMessage], *,
                            unroutable: bool = False) -> list[asyncio.Future[Any]]:
        """Publish many messages in one write; one confirm future per message.

        aiormq's ``basic_publish`` awaits a lock, a queue slot and the confirm for
        each message (a task and a socket write each). Here the frames of the whole
        batch go into one buffer (:mod:`gateway.transports.amqp_frames`) registered
        with the channel's confirm bookkeeping (delivery tag, ``message_id`` for a
        return) under the channel's lock, so tags match the order the broker sees.
        A future resolves to the ``Basic.Ack``, or fails with ``PublishError``
        (returned: no queue bound), ``DeliveryError`` (nack) or the connection's
        error. ``unroutable`` publishes to the alternate exchange instead (a
        returned message's second try).
        """
        channel = self.channel
        if channel is None or channel.is_closed:
            raise ConnectionError("not connected to the AMQP broker")
        exchange = self.conf.alternate_exchange if unroutable else self.conf.exchange
        futures: list[asyncio.Future[Any]] = []
        parts: list[bytes] = []
        async with channel.lock:
            first_tag = channel.delivery_tag
            for message in batch:
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                future = channel.create_future()
                channel.confirmations[tag] = future
                channel.message_id_delivery_tag[message.message_id] = tag
                future.add_done_callback(_forget(channel, message.message_id, tag))
                futures.append(future)
                parts.append(_frames(channel, exchange, message))
            try:
                await channel.write_queue.put(ChannelFrame(payload=b"".join(parts),
                                                           should_close=False))
            except BaseException:
                # Never written: the broker has not seen these tags; give them back.
                channel.delivery_tag = first_tag
                for future in futures:
                    future.cancel()
                raise
        return futures

    async def publish(self, message: WireMessage) -> bool:
        """Publish one message and wait for its confirm (a returned one goes to the
        unroutable queue). ``True``: routed; ``False``: kept as unroutable."""
        (future,) = await self.publish_batch([message])
        try:
            _check(await future, message)
            return True
        except aiormq.exceptions.PublishError:
            (future,) = await self.publish_batch([message], unroutable=True)
            try:
                _check(await future, message)
            except aiormq.exceptions.PublishError:
                raise self.unbound(message) from None
            return False

    def unbound(self, message: WireMessage) -> AmqpError:
        return AmqpError(f"message {message.message_id} was returned by the alternate "
                         f"exchange {self.conf.alternate_exchange!r} too (is the unroutable "
                         "queue bound to it?)")

    async def close(self) -> None:
        connection, self.connection, self.channel = self.connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                async with asyncio.timeout(5):
                    await connection.close()
            except Exception as exc:  # closing a dead connection: nothing left to save
                log.debug("closing the AMQP connection: %s", exc)


def _frames(channel: Any, exchange: str, message: WireMessage) -> bytes:
    """One publish's frames: busgate's own encoder, pamqp for anything unusual."""
    try:
        return amqp_frames.publish(channel.number, exchange, message,
                                   channel.max_content_size)
    except amqp_frames.Unsupported:
        frames = [spec.Basic.Publish(exchange=exchange, routing_key=message.routing_key,
                                     mandatory=True),
                  ContentHeader(properties=spec.Basic.Properties(**message.properties()),
                                body_size=len(message.body)),
                  *channel._split_body(message.body)]
        return b"".join(pamqp.frame.marshal(frame, channel.number) for frame in frames)


def _forget(channel: Any, message_id: str, tag: int) -> Any:
    def forget(_: asyncio.Future[Any]) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            channel.message_id_delivery_tag.pop(message_id)
    return forget


def check_confirm(confirm: Any, message: WireMessage) -> None:
    """Raise :class:`AmqpError` unless ``confirm`` is the broker's ack."""
    _check(confirm, message)


def _check(confirm: Any, message: WireMessage) -> None:
    if not isinstance(confirm, spec.Basic.Ack):
        raise AmqpError(f"the broker did not confirm message {message.message_id} ({confirm!r})")
