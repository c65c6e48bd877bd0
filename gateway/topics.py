"""The topic grammar, in one place.

``org.<distribution>.<env>.<service>.<object>[.<subobject>].<event>``: every token
lowercase ``[a-z0-9][a-z0-9-]*``; the whole topic at most 255 bytes (the AMQP
routing-key limit, so one topic works on both transports).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from gateway.errors import TopicError

TOKEN_RE = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
MAX_TOPIC_BYTES = 255
DEFAULT_ENVS = ("dev", "stg", "production")


#: Tokens already found valid: most events reuse a handful, so the regex runs once each.
_valid_tokens: set[str] = set()


def check_token(value: object, role: str) -> str:
    """Return ``value`` if it is a valid token, else raise naming the role and why."""
    if value in _valid_tokens:
        return value  # type: ignore[return-value]
    if not isinstance(value, str):
        raise TopicError(f"{role} token must be a string, got {type(value).__name__}")
    if not value:
        raise TopicError(f"{role} token is empty")
    if not TOKEN_RE.match(value):
        if value.lower() != value:
            why = "must be lowercase"
        elif "." in value:
            why = "must not contain '.' (one token per level)"
        elif value.startswith("-"):
            why = "must start with a letter or digit"
        else:
            why = "may only contain a-z, 0-9 and '-'"
        raise TopicError(f"{role} token {value!r} {why}")
    if len(_valid_tokens) < 10000:
        _valid_tokens.add(value)
    return value


def prefix(distribution: str, env: str, envs: Iterable[str] = DEFAULT_ENVS) -> str:
    """``org.<distribution>.<env>``, validated."""
    check_token(distribution, "distribution")
    check_token(env, "env")
    allowed = tuple(envs)
    if allowed and env not in allowed:
        raise TopicError(f"env token {env!r} is not one of {', '.join(allowed)}")
    return f"org.{distribution}.{env}"


def build(topic_prefix: str, service: str, *rest: str) -> str:
    """Join a validated prefix with ``service`` and the object/subobject/event tokens."""
    if not rest:
        raise TopicError("a topic needs at least an event after the service")
    roles = _roles(len(rest))
    check_token(service, "service")
    for token, role in zip(rest, roles, strict=True):
        check_token(token, role)
    topic = ".".join((topic_prefix, service, *rest))
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise TopicError(f"topic is {len(topic.encode())} bytes, more than {MAX_TOPIC_BYTES}")
    return topic


def validate(topic: str) -> str:
    """Check a full topic string against the grammar; return it unchanged."""
    if not isinstance(topic, str):
        raise TopicError("topic must be a string")
    return _validate(topic)


@functools.lru_cache(maxsize=4096)
def _validate(topic: str) -> str:
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise TopicError(f"topic is {len(topic.encode())} bytes, more than {MAX_TOPIC_BYTES}")
    tokens = topic.split(".")
    if len(tokens) < 6:
        raise TopicError(
            f"topic {topic!r} has {len(tokens)} tokens; expected "
            "org.<distribution>.<env>.<service>.<object>[.<subobject>].<event>"
        )
    if tokens[0] != "org":
        raise TopicError(f"topic {topic!r} must start with 'org'")
    names = ("org", "distribution", "env", "service", *_roles(len(tokens) - 4))
    for token, role in zip(tokens, names, strict=True):
        check_token(token, role)
    return topic


def _roles(n: int) -> tuple[str, ...]:
    if n == 1:
        return ("event",)
    return ("object", *(["subobject"] * (n - 2)), "event")
