"""Message types: what an event *means*, owned in one place per topic.

A message type is a class per topic (or per family of topics, e.g. every
``wanna-build.build.<state>``) that owns the topic tokens, the body's JSON
Schema, a one-line ``summary``, a ``url``, the ``usernames`` and ``packages`` it
concerns, and a ``severity``. It is modelled on fedora-messaging's ``Message``
(same property names, same severities), without its global configuration:
everything a type says is computed from the body alone, so a consumer on another
machine (``busgate tail``, the fedmsg.meta processor, a fedora-messaging
consumer) shows what the publisher would.

Adapters declare their types (``Source.messages``); the core finds a type by
topic tokens (:class:`TypeIndex`) when it builds an envelope, validates the body
against the type's schema before the event enters the outbox, and copies the
type's name, severity, users and packages into the envelope's ``headers``
(:func:`headers`). Consumers find a type by the ``fedora_messaging_schema``
header (:meth:`TypeIndex.by_name`), falling back to the topic.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from gateway.errors import ParseError

#: fedora-messaging's severities (``fedora_messaging_severity``).
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

#: Header naming the message type (fedora-messaging's name for it).
SCHEMA_HEADER = "fedora_messaging_schema"
SEVERITY_HEADER = "fedora_messaging_severity"
SENT_AT_HEADER = "sent-at"
#: ``<prefix><name>: true`` per user; fedora-messaging's own filter header, so a
#: consumer's header binding works unchanged.
USER_HEADER_PREFIX = "fedora_messaging_user_"
#: ``<prefix><name>: true`` per package. Debian packages are not RPMs: a consumer
#: binding on ``fedora_messaging_rpm_*`` expects Fedora package names, so busgate uses
#: its own prefix rather than mislabel a Debian source package as an RPM.
PACKAGE_HEADER_PREFIX = "busgate_package_"
#: Most users and most packages copied into headers (a push by many authors, a
#: removal of hundreds of packages): the body keeps them all, the headers the first.
MAX_HEADER_NAMES = 64
#: Longest name copied into a header key (longer ones are left out, not cut).
MAX_HEADER_NAME_CHARS = 128
#: Longest summary, in characters (longer ones end with "…").
MAX_SUMMARY_CHARS = 200
#: Most topics :meth:`TypeIndex.lookup` remembers the pattern match of (then it starts over).
MAX_MATCHED_TOPICS = 4096
#: The type of an event whose topic no registered type claims.
BASE_NAME = "base.message"


def counts_as(by_token: Mapping[str, tuple[str, str]]) -> Mapping[str, tuple[str, str]]:
    """A type's :attr:`Message.overview` declaration, read-only."""
    return MappingProxyType(dict(by_token))


class MessageValidationError(ParseError):
    """A body does not match its type's schema; says which type and where."""


class Message:
    """Base message type: any JSON object body, a generic summary.

    Subclasses set :attr:`name`, :attr:`topic_tokens`, :attr:`body_schema` and
    :attr:`severity`, and override the properties that have something to say.
    """

    #: Schema name: the ``fedora_messaging_schema`` header and the ``fedora.messages``
    #: entry point name (e.g. ``busgate.dak.package.accept.v1``).
    name: ClassVar[str] = BASE_NAME
    #: Topic tokens after ``org.<distribution>.<env>``; ``"*"`` matches any one token.
    topic_tokens: ClassVar[tuple[str, ...]] = ()
    #: JSON Schema (draft 2020-12) of the body.
    body_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}
    severity: ClassVar[int] = INFO
    #: What this type counts towards in the weekly overview (``busgate stats``): the
    #: topic's last token (``"*"``: any) -> (kind, detail), e.g. ``{"accept": ("uploads",
    #: "accepted")}``. Declared by the type so a new source brings its own kinds.
    overview: ClassVar[Mapping[str, tuple[str, str]]] = MappingProxyType({})

    def __init__(self, body: Any, topic: str = "",
                 headers: Mapping[str, Any] | None = None):
        self.body = body
        #: The full topic, when known.
        self.topic = topic
        self.headers = dict(headers or {})

    # -- what it means -------------------------------------------------------------------
    @property
    def summary(self) -> str:
        """One readable line (the base type: the first scalar fields of the body)."""
        body = self.body
        if isinstance(body, Mapping):
            parts = [f"{k}={v}" for k, v in body.items()
                     if isinstance(v, str | int | float) and not isinstance(v, bool)][:4]
            return clip(" ".join(parts))
        return clip(str(body))

    @property
    def url(self) -> str | None:
        return None

    @property
    def usernames(self) -> list[str]:
        return []

    @property
    def packages(self) -> list[str]:
        return []

    def __str__(self) -> str:
        return self.summary

    # -- validation ----------------------------------------------------------------------
    _validator: ClassVar[Any] = None
    _validator_for: ClassVar[type | None] = None

    @classmethod
    def validator(cls) -> Any:
        """The compiled JSON Schema validator of this type (made once per class)."""
        if cls.__dict__.get("_validator_for") is not cls:
            from jsonschema import Draft202012Validator

            Draft202012Validator.check_schema(cls.body_schema)
            cls._validator = Draft202012Validator(cls.body_schema)
            cls._validator_for = cls
        return cls._validator

    def validate(self) -> None:
        """Raise :class:`MessageValidationError` naming the type and the first failing
        place of the body."""
        if not isinstance(self.body, Mapping):
            raise MessageValidationError(
                f"{self.name}: the body must be a JSON object, not {type(self.body).__name__}")
        if type(self).body_schema is Message.body_schema:
            return  # the base schema asks for an object and nothing more: checked above
        validator = self.validator()
        error = next(iter(validator.iter_errors(self.body)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(body)"
            raise MessageValidationError(f"{self.name}: {where}: {error.message}"[:1000])


def clip(text: str, limit: int = MAX_SUMMARY_CHARS) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def headers(message: Message, timestamp: int, *,
            usernames: Iterable[object] | None = None,
            packages: Iterable[object] | None = None) -> dict[str, Any]:
    """The envelope's ``headers`` (fedora-messaging's meaning): type name, severity,
    ``sent-at`` (the outbox timestamp, UTC ISO 8601) and one filter key per user and
    package (at most :data:`MAX_HEADER_NAMES` each). ``usernames``/``packages`` replace
    the message's own (the envelope factory passes the type's merged with the event's)."""
    result = base_headers(message.name, message.severity,
                          message.usernames if usernames is None else usernames,
                          message.packages if packages is None else packages)
    result[SENT_AT_HEADER] = sent_at(timestamp)
    return result


def base_headers(name: str, severity: int, usernames: Iterable[object],
                 packages: Iterable[object]) -> dict[str, Any]:
    """:func:`headers` without ``sent-at``: what depends on the type and the names only,
    so the envelope factory encodes it once per (type, severity, users, packages)."""
    result: dict[str, Any] = {SCHEMA_HEADER: name, SEVERITY_HEADER: severity}
    for prefix, names in ((USER_HEADER_PREFIX, usernames), (PACKAGE_HEADER_PREFIX, packages)):
        for name in _header_names(names):
            result[prefix + name] = True
    return result


def sent_at(timestamp: int) -> str:
    """``sent-at`` of an envelope stored at ``timestamp`` (epoch seconds)."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat()


def _header_names(names: Iterable[object]) -> list[str]:
    kept: list[str] = []
    for name in names:
        if len(kept) >= MAX_HEADER_NAMES:
            break
        if isinstance(name, str) and name and len(name) <= MAX_HEADER_NAME_CHARS \
                and name not in kept:
            kept.append(name)
    return kept


def names_in_headers(envelope_headers: Mapping[str, Any], prefix: str) -> list[str]:
    """The users (``USER_HEADER_PREFIX``) or packages named in an envelope's headers."""
    return [key[len(prefix):] for key in envelope_headers if key.startswith(prefix)]


class TypeIndex:
    """Message types by topic tokens and by name.

    A topic is matched exactly first, then against the patterns with ``"*"``
    tokens (most specific first); no match gives :class:`Message`.
    ``overrides`` maps a type to the tokens it has in this deployment (the git
    service token is configurable: ``git.service``).
    """

    def __init__(self, types: Iterable[type[Message]],
                 overrides: Mapping[type[Message], tuple[str, ...]] | None = None):
        self._exact: dict[tuple[str, ...], type[Message]] = {}
        self._patterns: list[tuple[tuple[str, ...], type[Message]]] = []
        #: Pattern (and no-type) answers by tokens: every event is looked up, most
        #: topics repeat, and the patterns are tried in a loop.
        self._matched: dict[tuple[str, ...], type[Message]] = {}
        self._names: dict[str, type[Message]] = {BASE_NAME: Message}
        overrides = overrides or {}
        for cls in types:
            tokens = overrides.get(cls, cls.topic_tokens)
            if cls.name in self._names and self._names[cls.name] is not cls:
                raise ValueError(f"two message types are named {cls.name!r}")
            self._names[cls.name] = cls
            if "*" in tokens:
                self._patterns.append((tokens, cls))
            elif tokens:
                if tokens in self._exact and self._exact[tokens] is not cls:
                    raise ValueError(f"two message types claim {'.'.join(tokens)}")
                self._exact[tokens] = cls
        self._patterns.sort(key=lambda item: item[0].count("*"))

    def lookup(self, tokens: tuple[str, ...]) -> type[Message]:
        """The type of an event with these topic tokens (after the prefix)."""
        cls = self._exact.get(tokens)
        if cls is not None:
            return cls
        cls = self._matched.get(tokens)
        if cls is None:
            cls = Message
            for pattern, candidate in self._patterns:
                if len(pattern) == len(tokens) and all(
                        p in ("*", t) for p, t in zip(pattern, tokens, strict=True)):
                    cls = candidate
                    break
            if len(self._matched) >= MAX_MATCHED_TOPICS:
                self._matched.clear()
            self._matched[tokens] = cls
        return cls

    def by_name(self, name: str) -> type[Message] | None:
        return self._names.get(name)

    def for_envelope(self, envelope: Mapping[str, Any], prefix_tokens: int = 3) -> Message:
        """A received envelope's message: by its schema header, else by its topic
        (``prefix_tokens`` leading tokens, ``org.<d>.<env>``, are skipped)."""
        topic = str(envelope.get("topic", ""))
        head = envelope.get("headers")
        head = head if isinstance(head, Mapping) else {}
        cls = self.by_name(str(head.get(SCHEMA_HEADER, ""))) if head else None
        if cls is None or cls is Message:  # a publisher without the type: ask the topic
            cls = self.lookup(tuple(topic.split(".")[prefix_tokens:]))
        return cls(envelope.get("msg"), topic=topic, headers=head)

    def types(self) -> list[type[Message]]:
        return [cls for name, cls in sorted(self._names.items()) if cls is not Message]
