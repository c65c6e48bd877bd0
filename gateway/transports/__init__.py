"""Transports carry stored envelopes to the world. Same small interface for each.

``zmq`` (PUB bind) is the default; ``amqp`` (RabbitMQ with publisher confirms)
slots in behind :class:`Transport` when a deployment outgrows one machine.
"""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    name: str

    def try_send(self, topic: bytes, payload: bytes) -> bool:
        """Hand one message over if that needs no waiting; ``False`` otherwise."""
        ...

    async def send(self, topic: bytes, payload: bytes) -> bool:
        """Hand one message over. ``False`` means it was dropped for some receiver."""
        ...

    def send_now(self, topic: bytes, payload: bytes) -> None:
        """Hand one unstored message over at once or not at all, never waiting (heartbeats:
        a missed one is replaced by the next). Nothing is counted as dropped."""
        ...

    def close(self) -> None: ...
