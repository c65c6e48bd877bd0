"""The bus message: fedmsg-compatible envelope, canonical JSON, building, decoding.

Wire form on ZeroMQ is two frames ``[topic, json]``. The JSON is canonical
(sorted keys, compact separators, ASCII escapes) so that what is stored, sent,
replayed and signed is one byte string.

Every stored envelope carries ``headers`` with fedora-messaging's meaning
(:func:`gateway.messages.headers`: the message type's name and severity,
``sent-at``, one filter key per user and package), so an AMQP bridge, ``busgate
tail --users`` or a header binding need not understand the body. fedmsg
consumers ignore the extra field; signatures cover it like any other.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway import canonical, jsonbounds, messages, topics
from gateway import signing as _signing  # a module: signing imports this one too
from gateway.errors import EnvelopeError, ParseError, TopicError

if TYPE_CHECKING:
    from gateway.event import Event

#: Namespace for UUID5 msg_ids: the same event key always yields the same id.
MSG_ID_NAMESPACE = uuid.UUID("5d0c6f9e-3b7a-5d1e-9c59-627573676174")

REQUIRED_FIELDS = ("topic", "msg", "timestamp", "msg_id", "i", "username")
SIGNATURE_FIELDS = ("signature", "certificate")

#: ``allow_nan=False``: NaN/Infinity are not JSON, so no envelope may carry them.
_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                            allow_nan=False)


def canonical_json(value: Any) -> str:
    """The one canonical encoding (what fedmsg signs): sorted, compact, ASCII."""
    return _encoder.encode(value)


def msg_id_for(key: str, when: float | None = None) -> str:
    """``"<year>-<uuid5(key)>"``; the year is the source event's (UTC), else now."""
    return msg_id_from_uid(event_uid(key), when)


def msg_id_from_uid(uid: bytes, when: float | None = None) -> str:
    year = time.gmtime(when).tm_year  # gmtime(None) is now
    h = uid.hex()
    return f"{year}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_NAMESPACE_BYTES = MSG_ID_NAMESPACE.bytes


def event_uid(key: str) -> bytes:
    """The 16 bytes of ``uuid.uuid5(MSG_ID_NAMESPACE, key)``: an event's identity.

    Computed by hand because it runs for every event (a third of uuid5's cost).
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + key.encode(), usedforsecurity=False)
                       .digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return bytes(digest)


def uid_of_msg_id(msg_id: str) -> bytes:
    """Inverse of :func:`msg_id_for` (drops the year). Raises ValueError if malformed."""
    year, sep, rest = msg_id.partition("-")
    if not (sep and year.isdigit()):
        raise ValueError(f"msg_id {msg_id!r} is not <year>-<uuid>")
    return uuid.UUID(rest).bytes


def encode_unsigned(*, topic: str, body: Any, msg_id: str, timestamp: int, i: int,
                    username: str, seq_id: int, publisher: str,
                    publisher_epoch: str | None = None, headers_json: str | None = None,
                    body_json: str | None = None) -> str:
    """``canonical_json(build(...))`` for an unsigned envelope, without the dict round trip.

    ``headers_json`` is ``canonical_json(headers)`` (the factory keeps it encoded), and
    ``body_json`` ``canonical_json(body)`` when the caller has it already.
    The keys are written in sorted order by hand; a test holds it equal to the
    general path for every kind of body and headers.
    """
    head = "{" if headers_json is None else f'{{"headers":{headers_json},'
    return (
        f'{head}"i":{int(i)},"msg":{canonical.dumps(body) if body_json is None else body_json},'
        f'"msg_id":{_encoder.encode(msg_id)},'
        f'"publisher":{_json_str(publisher)},'
        f'{_epoch_field(publisher_epoch)}"seq_id":{int(seq_id)},'
        f'"timestamp":{int(timestamp)},"topic":{_json_str(topic)},'
        f'"username":{_json_str(username)}}}'
    )


def _epoch_field(epoch: str | None) -> str:
    return "" if epoch is None else f'"publisher_epoch":{_json_str(epoch)},'


@functools.lru_cache(maxsize=1024)
def _json_str(value: str) -> str:
    return _encoder.encode(value)


def build(
    *,
    topic: str,
    body: Any,
    msg_id: str,
    timestamp: int,
    i: int,
    username: str,
    seq_id: int | None = None,
    publisher: str | None = None,
    publisher_epoch: str | None = None,
    headers: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the unsigned envelope; signing (``gateway.signing``) comes last."""
    envelope: dict[str, Any] = {
        "topic": topic,
        "msg": body,
        "timestamp": int(timestamp),
        "msg_id": msg_id,
        "i": i,
        "username": username,
    }
    if seq_id is not None:
        envelope["seq_id"] = seq_id
    if publisher is not None:
        envelope["publisher"] = publisher
    if publisher_epoch is not None:
        envelope["publisher_epoch"] = publisher_epoch
    if headers is not None:
        envelope["headers"] = dict(headers)
    return envelope


#: Most encoded header prefixes the factory keeps (one per type, severity, users and
#: packages seen); past it the cache starts again, so it cannot grow without bound.
HEADER_CACHE_SIZE = 4096
_SENT_AT_KEY = _encoder.encode(messages.SENT_AT_HEADER)


class EnvelopeFactory:
    """Turns an :class:`~gateway.event.Event` plus its ``seq_id`` into the stored, signed
    envelope, with the ``headers`` of the event's message type (found in ``index``;
    an empty index makes every event a ``base.message``)."""

    def __init__(self, topic_prefix: str, publisher: str, username: str,
                 signer: _signing.Signer | None = None,
                 index: messages.TypeIndex | None = None):
        self.topic_prefix = topic_prefix
        self.publisher = publisher
        self.username = username
        self.signer = signer or _signing.NullSigner()
        self.index = index if index is not None else messages.TypeIndex(())
        #: The state database's epoch, set by the store when it opens the database.
        self.epoch: str | None = None
        self._counter = itertools.count(1)
        self._topics: dict[tuple[str, ...], tuple[str, type[messages.Message]]] = {}
        self._heads: dict[tuple[Any, ...], tuple[dict[str, Any], str]] = {}
        self._sent_at: tuple[int, str] = (-1, "")
        self._plain: tuple[int, tuple[dict[str, Any], str]] = (-1, ({}, ""))

    def _topic(self, event: Event) -> tuple[str, type[messages.Message]]:
        tokens = event.topic_tokens()
        entry = self._topics.get(tokens)
        if entry is None:
            entry = self._topics[tokens] = (event.topic(self.topic_prefix),
                                            self.index.lookup(tokens))
        return entry

    def headers(self, event: Event, cls: type[messages.Message], topic: str,
                now: int) -> tuple[dict[str, Any], str]:
        """``(headers without sent-at, canonical JSON of the whole headers)``.

        Users and packages are the type's (from the body) followed by the event's own
        (what the adapter or ``busgate.publish(usernames=...)`` gave), capped at
        :data:`~gateway.messages.MAX_HEADER_NAMES` each. The part without ``sent-at`` is
        encoded once per (type, severity, users, packages): ``sent-at`` sorts after every
        other header key, so it is appended to the cached text.
        """
        if cls is messages.Message:  # no type claims the topic: nothing to compute
            key: tuple[Any, ...] = (cls.name, cls.severity, event.usernames, event.packages)
        else:
            message = cls(event.body, topic)
            key = (message.name, message.severity,
                   _names(message.usernames, event.usernames),
                   _names(message.packages, event.packages))
        cached = self._heads.get(key)
        if cached is None:
            if len(self._heads) >= HEADER_CACHE_SIZE:
                self._heads.clear()
            fixed = messages.base_headers(*key)
            cached = self._heads[key] = (fixed, _encoder.encode(fixed)[:-1])
        stamp, sent_at = self._sent_at
        if stamp != now:
            sent_at = _encoder.encode(messages.sent_at(now))
            self._sent_at = (now, sent_at)
        return cached[0], f"{cached[1]},{_SENT_AT_KEY}:{sent_at}}}"

    def make(self, event: Event, seq_id: int, now: int,
             uid: bytes | None = None) -> tuple[str, str, str]:
        """Return ``(topic, msg_id, canonical envelope JSON)``. Raises what a message type's
        ``usernames``/``packages`` raise (ingest quarantines the input then)."""
        topic, cls = self._topic(event)
        if cls is messages.Message and not event.usernames and not event.packages:
            # the common case (no type, no names): one text per second, made once
            if self._plain[0] != now:
                self._plain = (now, self.headers(event, cls, topic, now))
            fixed, headers_json = self._plain[1]
        else:
            fixed, headers_json = self.headers(event, cls, topic, now)
        msg_id = msg_id_from_uid(uid or event_uid(event.key), event.time)
        if isinstance(self.signer, _signing.NullSigner):
            return topic, msg_id, encode_unsigned(
                topic=topic, body=event.body, msg_id=msg_id, timestamp=now,
                i=next(self._counter), username=self.username, seq_id=seq_id,
                publisher=self.publisher, publisher_epoch=self.epoch,
                headers_json=headers_json,
                body_json=canonical.dumps_float_free(event.body) if event.float_free else None,
            )
        envelope = build(
            topic=topic, body=event.body, msg_id=msg_id, timestamp=now,
            i=next(self._counter), username=self.username, seq_id=seq_id,
            publisher=self.publisher, publisher_epoch=self.epoch,
            headers={**fixed, messages.SENT_AT_HEADER: messages.sent_at(now)},
        )
        return topic, msg_id, canonical_json(self.signer.sign(envelope))

    def _unsigned(self, event: Event, seq_id: int, now: int,
                  uid: bytes | None) -> tuple[str, str, dict[str, Any]]:
        """``(topic, msg_id, envelope dict before signing)``, as :meth:`make` builds it."""
        topic, cls = self._topic(event)
        fixed, _ = self.headers(event, cls, topic, now)
        msg_id = msg_id_from_uid(uid or event_uid(event.key), event.time)
        return topic, msg_id, build(
            topic=topic, body=event.body, msg_id=msg_id, timestamp=now,
            i=next(self._counter), username=self.username, seq_id=seq_id,
            publisher=self.publisher, publisher_epoch=self.epoch,
            headers={**fixed, messages.SENT_AT_HEADER: messages.sent_at(now)},
        )

    def make_many(self, items: list[tuple[Event, int, bytes]],
                  now: int) -> list[tuple[str, str, str]]:
        """:meth:`make` for ``(event, seq_id, uid)`` items. A signer with ``sign_many``
        signs them together (x509: RSA on every core, the costly part of a signed path)."""
        sign_many = getattr(self.signer, "sign_many", None)
        if sign_many is None or len(items) < 2:
            return [self.make(event, seq, now, uid) for event, seq, uid in items]
        parts = [self._unsigned(event, seq, now, uid) for event, seq, uid in items]
        signed = sign_many([envelope for _, _, envelope in parts])
        return [(topic, msg_id, canonical_json(envelope))
                for (topic, msg_id, _), envelope in zip(parts, signed, strict=True)]


def encode(envelope: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Two ZeroMQ frames for ``envelope``."""
    return envelope["topic"].encode(), canonical_json(envelope).encode()


#: Deepest nesting a received envelope may have: a body of ``ingest.max_json_depth``
#: (64 by default) plus the envelope, with room for other publishers' settings.
MAX_RECEIVED_DEPTH = 256


_REQUIRED = frozenset(REQUIRED_FIELDS)
#: Most valid topics :func:`check` remembers with their encoding (then it starts again).
VALID_TOPICS_CACHE = 4096
_valid_topics: dict[str, bytes] = {}


def decode(frames: Sequence[bytes]) -> dict[str, Any]:
    """Validate two frames and return the envelope. Raises :class:`EnvelopeError`.

    Frames come from the network: NaN/Infinity and nesting past
    :data:`MAX_RECEIVED_DEPTH` are refused instead of crashing the subscriber."""
    return decode_flagged(frames)[0]


def decode_flagged(frames: Sequence[bytes]) -> tuple[dict[str, Any], bool]:
    """:func:`decode`, and whether the envelope is known to hold no float: then
    :func:`gateway.canonical.dumps_float_free` writes its canonical JSON without a walk
    over it (the recorder stores every envelope's canonical JSON)."""
    if len(frames) != 2:
        raise EnvelopeError(f"expected 2 frames [topic, json], got {len(frames)}")
    topic_frame, body = frames
    try:
        envelope, float_free = jsonbounds.loads_flagged(body, MAX_RECEIVED_DEPTH)
    except (UnicodeDecodeError, json.JSONDecodeError, ParseError) as exc:
        raise EnvelopeError(f"frame 1 is not JSON: {exc}") from None
    return check(envelope, topic_frame), float_free


def check(envelope: Any, topic_frame: bytes | None = None) -> dict[str, Any]:
    """Validate a decoded envelope (and frame 0, when given)."""
    if not isinstance(envelope, dict):
        raise EnvelopeError("envelope must be a JSON object")
    if not envelope.keys() >= _REQUIRED:
        missing = [name for name in REQUIRED_FIELDS if name not in envelope]
        raise EnvelopeError(f"envelope lacks {', '.join(missing)}")
    topic = envelope["topic"]
    if not isinstance(topic, str):
        raise EnvelopeError("envelope topic must be a string")
    # A topic seen before is valid, and its frame is its encoding (a subscriber's every
    # message: one lookup instead of encoding and validating the topic again).
    encoded = _valid_topics.get(topic)
    if encoded is None:
        try:
            encoded = topic.encode()
        except UnicodeEncodeError:  # a lone surrogate (``\udcff`` escapes are JSON)
            raise EnvelopeError("envelope topic is not valid Unicode") from None
        if topic_frame is not None and topic_frame != encoded:
            raise EnvelopeError("frame 0 topic differs from the envelope's topic")
        try:
            topics.validate(topic)
        except TopicError as exc:
            raise EnvelopeError(str(exc)) from None
        if len(_valid_topics) >= VALID_TOPICS_CACHE:
            _valid_topics.clear()
        _valid_topics[topic] = encoded
    elif topic_frame is not None and topic_frame != encoded:
        raise EnvelopeError("frame 0 topic differs from the envelope's topic")
    if type(envelope["timestamp"]) is not int:
        raise EnvelopeError("timestamp must be an integer")
    seq = envelope.get("seq_id")
    if seq is not None and (type(seq) is not int or seq < 1):
        raise EnvelopeError("seq_id must be a positive integer")
    return envelope


def _names(from_type: Any, from_event: tuple[str, ...]) -> tuple[str, ...]:
    """The type's names then the event's, strings only (a cache key: hashable)."""
    return (*(n for n in from_type if isinstance(n, str)), *from_event)
