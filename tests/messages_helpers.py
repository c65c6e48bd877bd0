"""Check events against their message types (shared by the adapter and golden tests).

``check_events(events, index)`` takes a :class:`TypeIndex` or the types themselves.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator

from gateway import ingest
from gateway.event import Event
from gateway.messages import Message, TypeIndex

TOPIC_PREFIX = "org.debian.dev"


def index_of(types: Any) -> TypeIndex:
    """A :class:`TypeIndex` from an index, an iterable of types, or busgate settings (the
    registry's types, with that deployment's topic tokens)."""
    if isinstance(types, TypeIndex):
        return types
    if hasattr(types, "topic_prefix"):  # Settings
        from gateway import runtime

        return runtime.type_index(types)
    return TypeIndex(list(types))


as_index = index_of


def check_events(events: Iterable[Event], index: TypeIndex | Iterable[type[Message]]
                 ) -> list[Message]:
    """Each event's message, after asserting that a registered type claims its topic,
    its body (as JSON on the wire) validates, and what the type says is well formed:
    a one-line non-empty summary, a URL or None, lists of names. Also asserts that the
    type names the same users and packages as the adapter put in the event."""
    index = index_of(index)
    events = list(events)
    _, invalid = ingest.check_events(events, index)  # the check ingest makes
    assert not invalid, "\n".join(f"event {n} ({e.key}): {why}" for n, e, why in invalid)
    messages = []
    for event in events:
        cls = index.lookup(event.topic_tokens())
        topic = event.topic(TOPIC_PREFIX)
        assert cls is not Message, f"no message type claims {topic}"
        message = cls(json.loads(json.dumps(event.body)), topic=topic)
        message.validate()
        formats(cls).validate(message.body)  # and the formats (uri, date-time) the core skips
        summary = message.summary
        assert isinstance(summary, str) and summary and "\n" not in summary, (topic, summary)
        assert message.url is None or message.url.startswith(("http://", "https://")), \
            message.url
        for names in (message.usernames, message.packages):
            assert isinstance(names, list) and all(isinstance(n, str) and n for n in names)
        assert message.usernames == list(event.usernames), (topic, message.usernames,
                                                            event.usernames)
        assert message.packages == list(event.packages), (topic, message.packages,
                                                          event.packages)
        messages.append(message)
    return messages


@functools.cache
def formats(cls: type[Message]) -> Draft202012Validator:
    return Draft202012Validator(cls.body_schema,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def described(event: Event, message: Message) -> dict[str, Any]:
    """What a golden file holds for one event."""
    from gateway.envelope import msg_id_for

    return {"topic": event.topic(TOPIC_PREFIX), "key": event.key,
            "msg_id": msg_id_for(event.key, event.time), "body": message.body,
            "summary": message.summary, "url": message.url,
            "usernames": message.usernames, "packages": message.packages,
            "severity": message.severity, "schema": message.name}
