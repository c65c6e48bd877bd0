"""Periodic heartbeat carrying the latest seq_id sent, so a gap at the tail is seen.

Heartbeats are not stored and carry no ``seq_id`` field of their own (stock
fedmsg consumers would otherwise try to replay them); the number is in the body,
with the publisher's epoch (a wiped state is a new epoch: seq_ids restart).
A message on the heartbeat topic that has a ``seq_id`` came through the outbox,
so it is not a heartbeat, whatever it says; ``busgate publish`` refuses the
topic (:func:`is_reserved`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.signing import Signer

SERVICE, OBJECT, EVENT = "busgate", "publisher", "heartbeat"


def topic(topic_prefix: str) -> str:
    return f"{topic_prefix}.{SERVICE}.{OBJECT}.{EVENT}"


def is_heartbeat(envelope: dict[str, Any]) -> bool:
    """The topic is the heartbeat's and nothing stored it (no ``seq_id``)."""
    return str(envelope.get("topic", "")).endswith(f".{SERVICE}.{OBJECT}.{EVENT}") \
        and "seq_id" not in envelope


def is_reserved(service: str, tokens: list[str]) -> bool:
    """Whether a user-given topic would be the heartbeat's (``busgate publish`` refuses it)."""
    return service == SERVICE and tokens == [OBJECT, EVENT]


def build(topic_prefix: str, publisher: str, username: str, last_seq_id: int,
          replay: str | None, epoch: str | None = None,
          signer: Signer | None = None) -> tuple[bytes, bytes]:
    """Two frames; signed like stored messages (validating subscribers refuse unsigned ones).
    Envelopes are imported here: ``busgate publish`` imports this module for
    :func:`is_reserved` only."""
    from gateway import envelope as env

    now = time.time()
    body = {"publisher": publisher, "last_seq_id": last_seq_id, "replay": replay or None,
            "publisher_epoch": epoch}
    envelope = env.build(
        topic=topic(topic_prefix), body=body,
        msg_id=f"{time.gmtime(now).tm_year}-{_uuid4()}", timestamp=int(now), i=0,
        username=username, publisher=publisher, publisher_epoch=epoch,
    )
    if signer is not None:
        envelope = signer.sign(envelope)
    return env.encode(envelope)


def _uuid4() -> str:
    """A random UUID: imported here, not at the top (``busgate publish`` imports this
    module for its reserved topic; uuid brings platform along, start-up time)."""
    import uuid

    return str(uuid.uuid4())
