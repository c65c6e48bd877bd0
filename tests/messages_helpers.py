"""Check events against their message types (shared by the adapters' tests).

Minimal version written with the dak/git types (branch ``typesdakgit``); the
messages-core branch owns this module and may widen it (same name and call).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.event import Event
from gateway.messages import Message, TypeIndex


def as_index(index: TypeIndex | Iterable[type[Message]]) -> TypeIndex:
    return index if isinstance(index, TypeIndex) else TypeIndex(index)


def check_events(events: Sequence[Event], index: TypeIndex | Iterable[type[Message]]
                 ) -> list[Message]:
    """Each event's message, found by its topic tokens in ``index`` (a :class:`TypeIndex`
    or the types themselves): the event must have a registered type (not the base
    ``Message``), its body must survive JSON and validate against the type's schema, and
    the type's summary, url, usernames and packages must be computable."""
    index = as_index(index)
    messages = []
    for event in events:
        cls = index.lookup(event.topic_tokens())
        topic = ".".join(event.topic_tokens())
        assert cls is not Message, f"{topic}: no message type claims this topic"
        message = cls(json.loads(json.dumps(event.body)), topic=topic)
        message.validate()
        assert isinstance(message.summary, str) and message.summary, f"{topic}: no summary"
        assert "\n" not in message.summary, f"{topic}: summary spans lines"
        assert message.url is None or isinstance(message.url, str)
        assert all(isinstance(n, str) and n for n in message.usernames)
        assert all(isinstance(n, str) and n for n in message.packages)
        messages.append(message)
    return messages


def described(event: Event, message: Message) -> dict[str, Any]:
    """What the golden files hold of one event and its type."""
    from gateway.envelope import msg_id_for

    return {
        "topic": ".".join(event.topic_tokens()),
        "key": event.key,
        "msg_id": msg_id_for(event.key, event.time),
        "schema": message.name,
        "severity": message.severity,
        "summary": message.summary,
        "url": message.url,
        "usernames": message.usernames,
        "packages": message.packages,
        "body": message.body,
    }
