"""Periodic heartbeat carrying the latest seq_id sent, so a gap at the tail is seen.

Heartbeats are not stored and carry no ``seq_id`` field of their own (stock
fedmsg consumers would otherwise try to replay them); the number is in the body.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from gateway import envelope as env

SERVICE, OBJECT, EVENT = "busgate", "publisher", "heartbeat"


def topic(topic_prefix: str) -> str:
    return f"{topic_prefix}.{SERVICE}.{OBJECT}.{EVENT}"


def is_heartbeat(envelope: dict[str, Any]) -> bool:
    return str(envelope.get("topic", "")).endswith(f".{SERVICE}.{OBJECT}.{EVENT}")


def build(topic_prefix: str, publisher: str, username: str, last_seq_id: int,
          replay: str | None) -> tuple[bytes, bytes]:
    now = time.time()
    body = {"publisher": publisher, "last_seq_id": last_seq_id, "replay": replay or None}
    envelope = env.build(
        topic=topic(topic_prefix), body=body,
        msg_id=f"{time.gmtime(now).tm_year}-{uuid.uuid4()}", timestamp=int(now), i=0,
        username=username, publisher=publisher,
    )
    return env.encode(envelope)
