"""Check adapters' events against their message types (golden-fixture tests use it).

``check_events(events, types)`` validates every event's body against the type its
topic finds (through :func:`gateway.ingest.check_events`, the check ingest makes
before the outbox) and returns what each event means: topic, key, body, summary,
url, usernames, packages, schema name and msg_id, ready to compare with an
expected-events file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway import ingest, messages
from gateway.envelope import msg_id_for
from gateway.event import Event


def index_of(types: Any) -> messages.TypeIndex:
    """A :class:`~gateway.messages.TypeIndex` from an index, an iterable of types, or
    busgate settings (the registry's types, with that deployment's topic tokens)."""
    if isinstance(types, messages.TypeIndex):
        return types
    if hasattr(types, "topic_prefix"):  # Settings
        from gateway import runtime

        return runtime.type_index(types)
    return messages.TypeIndex(list(types))


def check_events(events: Iterable[Event], types: Any,
                 topic_prefix: str = "org.debian.dev") -> list[dict[str, Any]]:
    """Fail (AssertionError naming the type and place) on an event its type refuses;
    else one dict per event with what its type says about it."""
    index = index_of(types)
    events = list(events)
    _, invalid = ingest.check_events(events, index)
    assert not invalid, "\n".join(f"event {n} ({e.key}): {why}" for n, e, why in invalid)
    result = []
    for event in events:
        topic = event.topic(topic_prefix)
        message = index.lookup(event.topic_tokens())(event.body, topic)
        result.append({
            "topic": topic, "key": event.key, "body": event.body,
            "schema": message.name, "summary": message.summary, "url": message.url,
            "usernames": list(message.usernames), "packages": list(message.packages),
            "severity": message.severity, "msg_id": msg_id_for(event.key, event.time),
        })
    return result
