"""Publish from Python, as fedmsg users do: ``busgate.publish(topic=..., modname=..., msg=...)``.

A call validates the topic and the body the way the spool worker will (topic
grammar and byte limit, a JSON object without NaN/Infinity, nested at most
``ingest.max_json_depth``, the item within ``ingest.max_item_bytes``, and the
schema of the message type the topic has, see :mod:`gateway.messages`), writes one
fsync'd ``events`` item into the daemon's spool and returns the ``msg_id`` the
event will carry. No socket is opened and nothing sleeps: the daemon publishes
the event, even if it was down when the call returned. Bad input raises before
anything is written, so a refused call stores nothing.

:class:`Publisher` keeps the loaded settings and the spool, for a long-lived
process; :func:`publish` keeps one per configuration path. Both are thread-safe:
every call writes its own spool item.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from gateway import config as _config
from gateway import publishing
from gateway.envelope import msg_id_for
from gateway.messages import TypeIndex
from gateway.publishing import MessageError, UnmarkedSpoolError
from gateway.spool import Spool

__all__ = ["MessageError", "Publisher", "UnmarkedSpoolError", "publish", "publish_many"]

#: Longest caller-given ``key`` (bytes of UTF-8).
MAX_KEY_BYTES = 1024
#: Most events in one batch: the spool worker commits up to 10,000 events of an item in
#: one transaction (``gateway.ingest.ingest``), so a batch is stored all or nothing.
MAX_BATCH_EVENTS = 10000


class Publisher:
    """Validates messages and hands them to the daemon's spool; settings read once.

    ``config`` is a :class:`gateway.config.Settings` or a path (default:
    ``$BUSGATE_CONFIG``, else the embedded defaults). ``modname`` is the service
    token used when a call gives none.
    """

    def __init__(self, config: _config.Settings | str | os.PathLike[str] | None = None,
                 *, modname: str | None = None):
        settings = config if isinstance(config, _config.Settings) else _config.load(config)
        self.settings = settings
        self.topic_prefix = settings.topic_prefix
        self.modname = modname
        self.spool = Spool(settings.spool_dir)
        self._max_item = settings.ingest.max_item_bytes
        self._max_depth = settings.ingest.max_json_depth
        self._index: TypeIndex | None = None

    @property
    def index(self) -> TypeIndex:
        """The message types (registry), read at the first message: a type's schema
        refuses a body here as the worker would."""
        if self._index is None:
            from gateway import runtime

            self._index = runtime.type_index(self.settings)
        return self._index

    def publish(self, topic: str, msg: Mapping[str, Any], modname: str | None = None, *,
                key: str | None = None, usernames: Iterable[str] = (),
                packages: Iterable[str] = ()) -> str:
        """Store one event durably; return its ``msg_id``. See :func:`publish`."""
        line, msg_id = self._line(topic, msg, modname, key, usernames, packages)
        self._deliver([line])
        return msg_id

    def publish_many(self, messages: Iterable[Mapping[str, Any]]) -> list[str]:
        """Store many events as ONE spool item (all or none); return their ``msg_id``s.

        Each message is a mapping of :meth:`publish`'s arguments (``topic``, ``msg``,
        optional ``modname``, ``key``, ``usernames``, ``packages``)."""
        with self.batch() as batch:
            for number, message in enumerate(messages, 1):
                if not isinstance(message, Mapping):
                    raise MessageError(f"message {number}: a mapping of publish() "
                                       "arguments, not " + type(message).__name__)
                unknown = set(message) - _ARGUMENTS
                if unknown:
                    raise MessageError(f"message {number}: unknown argument(s) "
                                       f"{', '.join(sorted(unknown))}")
                try:
                    batch.publish(**message)
                except TypeError as exc:  # topic or msg missing
                    raise MessageError(f"message {number}: {exc}") from None
        return batch.msg_ids

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        """``with publisher.batch() as b: b.publish(...)``: one spool item written when
        the block ends without an exception; nothing at all otherwise."""
        batch = Batch(self)
        yield batch
        batch._flush()

    def _line(self, topic: str, msg: Mapping[str, Any], modname: str | None,
              key: str | None, usernames: Iterable[str], packages: Iterable[str],
              ) -> tuple[bytes, str]:
        """One spool line (an ``Event.to_dict`` record) and the msg_id it will get."""
        service, tokens = publishing.split_topic(self.topic_prefix, topic, modname,
                                                 self.modname)
        body = publishing.encode_body(msg, self._max_depth)
        publishing.validate_body(publishing.message_type(self.index, service, tokens), msg)
        if key is None:
            key = uuid.uuid4().hex
        elif not isinstance(key, str) or not key:
            raise MessageError("key must be a non-empty string")
        elif len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise MessageError(f"key is over {MAX_KEY_BYTES} bytes")
        # Namespaced so that a Python caller's key never collides with an adapter's.
        stored_key = f"python:{service}:{key}"
        when = time.time()
        head = publishing.record_head(
            service, tokens, time=when, usernames=publishing.strings(usernames, "usernames"),
            packages=publishing.strings(packages, "packages"))
        line = publishing.line(head, stored_key, body)
        if len(line) > self._max_item:
            raise MessageError(f"message is {len(line)} bytes, over ingest.max_item_bytes "
                               f"({self._max_item})")
        return line, msg_id_for(stored_key, when)

    def _deliver(self, lines: list[bytes]) -> None:
        publishing.require_mark(self.spool)
        self.spool.deliver("events", lines)


class Batch:
    """Events collected by :meth:`Publisher.batch`, written as one spool item."""

    def __init__(self, publisher: Publisher):
        self._publisher = publisher
        self._lines: list[bytes] = []
        self._bytes = 0
        self._lock = threading.Lock()
        self.msg_ids: list[str] = []

    def publish(self, topic: str, msg: Mapping[str, Any], modname: str | None = None, *,
                key: str | None = None, usernames: Iterable[str] = (),
                packages: Iterable[str] = ()) -> str:
        """Add one event (validated now); return the ``msg_id`` it will get."""
        line, msg_id = self._publisher._line(topic, msg, modname, key, usernames, packages)
        limit = self._publisher._max_item
        with self._lock:
            if len(self._lines) >= MAX_BATCH_EVENTS:
                raise MessageError(f"a batch holds at most {MAX_BATCH_EVENTS} events")
            if self._bytes + len(line) > limit:
                raise MessageError(f"batch would be over ingest.max_item_bytes ({limit}); "
                                   "split it")
            self._lines.append(line)
            self._bytes += len(line)
            self.msg_ids.append(msg_id)
        return msg_id

    def _flush(self) -> None:
        with self._lock:
            if self._lines:
                self._publisher._deliver(self._lines)
            self._lines = []


_ARGUMENTS = {"topic", "msg", "modname", "key", "usernames", "packages"}


_publishers: dict[object, Publisher] = {}
_publishers_lock = threading.Lock()


def _default(config: _config.Settings | str | os.PathLike[str] | None) -> Publisher:
    if isinstance(config, _config.Settings):
        return Publisher(config)
    cache_key = os.fspath(config) if config is not None else os.environ.get(_config.CONFIG_ENV)
    with _publishers_lock:
        publisher = _publishers.get(cache_key)
        if publisher is None:
            publisher = _publishers[cache_key] = Publisher(config)
        return publisher


def publish(topic: str, msg: Mapping[str, Any], modname: str | None = None, *,
            key: str | None = None, config: _config.Settings | str | os.PathLike[str] | None = None,
            usernames: Iterable[str] = (), packages: Iterable[str] = ()) -> str:
    """Hand one event to the daemon; return its ``msg_id`` once it is on disk.

    ``topic`` is ``<object>[.<subobject>].<event>`` after ``modname`` (the service
    token), or a full topic with this bus's ``org.<distribution>.<env>.`` prefix.
    ``msg`` is the body, a JSON object. ``key`` makes the event idempotent: the
    same ``key`` (and modname) again is stored once; without it every call is a new
    event. ``config`` is a path or Settings (default ``$BUSGATE_CONFIG``); it is read
    once per process and path.

    Raises :class:`TopicError`, :class:`MessageError` (bad input, nothing stored),
    :class:`UnmarkedSpoolError` (no daemon reads that spool) or :class:`SpoolError`
    (the disk refused; nothing stored, try again).
    """
    return _default(config).publish(topic, msg, modname, key=key, usernames=usernames,
                                    packages=packages)


def publish_many(messages: Iterable[Mapping[str, Any]], *,
                 config: _config.Settings | str | os.PathLike[str] | None = None) -> list[str]:
    """:meth:`Publisher.publish_many` with the default publisher of ``config``."""
    return _default(config).publish_many(messages)
