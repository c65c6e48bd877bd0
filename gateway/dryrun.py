"""``--dry-run`` output: one JSON object per event and line, nothing stored."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import TextIO

from gateway.envelope import msg_id_for
from gateway.event import Event


def print_events(events: Iterable[Event], topic_prefix: str, stream: TextIO | None = None) -> int:
    """Print each event as ``{"topic", "msg", "key", "msg_id"}``; return how many."""
    out = stream or sys.stdout
    count = 0
    for event in events:
        record = {
            "topic": event.topic(topic_prefix),
            "msg": event.body,
            "key": event.key,
            "msg_id": msg_id_for(event.key, event.time),
        }
        out.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
        count += 1
    out.flush()
    return count
