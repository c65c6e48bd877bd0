"""The base every consumer is written on: subscribe, filter, validate, call back, resume.

A :class:`Consumer` reads one of two transports, so a consumer's code does not care:

* ZeroMQ through :class:`~gateway.subscriber.Subscriber` (gap repair by replay; the
  verifier checks every message, live or replayed, before it counts), or
* a durable AMQP queue through :class:`~gateway.amqp_subscriber.AmqpSubscriber` (the
  queue is the position; the envelope is checked here, since the queue cannot).

What it adds to them, once for every consumer (``busgate tail``, the recorder, IRC,
notifications):

* filters by topic (with or without the ``org.<d>.<env>.`` prefix), excluded topic,
  user and package (:mod:`gateway.msgfilter`, asking the message types);
* a restart-safe position (:mod:`gateway.consumer_state`) when the consumer has a
  name and a state directory: a restarted consumer resumes each publisher after the
  last seq_id it handled, by replay, so nothing is lost; rows the callback writes
  through ``delivery.db`` commit with the position, so nothing is doubled;
* :class:`Counters`: received, delivered, filtered, rejected by reason, callback errors;
* batches (``batch`` > 1, durable ZeroMQ consumers): one transaction holds several
  messages and their position, committed after ``batch`` messages or ``batch_seconds``,
  whichever comes first. A commit costs far more than a row (the recorder: 4-8k
  messages/s one by one); a kill -9 loses the open batch's rows *and* its position
  together, so replay brings exactly those back.

Callback policy: an exception in the callback is logged with the message's topic and
seq_id, counted in ``errors``, and the consumer goes on with the next message; the
failed message counts as handled (its ``delivery.db`` writes are rolled back, its
position is kept), because one poison message must not stop a feed forever. On AMQP
it is acknowledged like any handled message (the queue's dead-letter policy is the
operator's). A consumer that must stop instead raises from the callback a
:class:`StopConsumer`; one whose own store failed (a database server down) raises
:class:`NotHandled`: the position stays before the message, which comes again.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway import msgfilter
from gateway.consumer_state import Position, path_for
from gateway.discovery import Endpoint

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.messages import TypeIndex
    from gateway.verify import SignatureError, Verifier

log = logging.getLogger(__name__)

#: Called with (endpoint, envelope, error) for each message the verifier refused.
RejectHook = Callable[[Endpoint, dict[str, Any], "SignatureError"], None]
#: ``verifier=DEFAULT``: the one ``[signing]`` asks for (``verify.from_settings``).
DEFAULT: Any = object()
#: Longest a batch's transaction may stay open (it holds the database's write lock).
MAX_BATCH_SECONDS = 5.0


class StopConsumer(Exception):
    """Raised by a callback to end :meth:`Consumer.run` (the message counts as handled)."""


class NotHandled(Exception):
    """Raised by a callback that could not handle a message and must see it again (its
    store is unreachable): :meth:`Consumer.run` rolls the message's transaction back,
    so the position stays before it, and raises this on."""


@dataclass
class Counters:
    """What one consumer has seen since it started."""

    #: Messages out of the transport (topic filters applied there), signed or not.
    received: int = 0
    #: Messages handed to the callback (or yielded).
    delivered: int = 0
    #: Messages the user/package filter kept from the callback.
    filtered: int = 0
    #: Messages refused, by reason (``gateway.verify.REASONS``; ``wire`` on AMQP for a
    #: body that is not a message).
    rejected: dict[str, int] = field(default_factory=dict)
    #: Callback exceptions (the consumer went on).
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"received": self.received, "delivered": self.delivered,
                "filtered": self.filtered, "rejected": dict(self.rejected),
                "errors": self.errors}


@dataclass(frozen=True)
class Filters:
    """Which messages a consumer wants (all, when empty). Topics are full prefixes."""

    topics: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    users: frozenset[str] = frozenset()
    packages: frozenset[str] = frozenset()

    @classmethod
    def build(cls, topic_prefix: str, *, topics: Iterable[str] = (),
              exclude: Iterable[str] = (), users: Iterable[str] = (),
              packages: Iterable[str] = ()) -> Filters:
        """Filters from a user's words: a topic without ``org.`` follows ``topic_prefix``;
        names may be comma-separated (fedmsg-tail's habit)."""
        return cls(tuple(msgfilter.expand_topic(t, topic_prefix) for t in topics),
                   tuple(msgfilter.expand_topic(t, topic_prefix) for t in exclude),
                   msgfilter.split_names(users), msgfilter.split_names(packages))


@dataclass
class Delivery:
    """One message for the consumer."""

    envelope: dict[str, Any]
    #: It came by replay (a repaired gap, a resume) or was redelivered by the broker.
    replayed: bool = False
    #: The position file's connection inside the message's transaction (named
    #: consumers only): rows written here commit with the position.
    db: sqlite3.Connection | None = None
    #: The publisher it is tracked under (ZeroMQ: the envelope's, else the endpoint's).
    publisher: str | None = None
    #: ``db``'s transaction holds other messages too (a batching consumer: it commits
    #: later, after the consumer's ``before_commit``); unsequenced messages get ``db`` too.
    batched: bool = False
    #: The transport read the envelope holding no float (see ``Message.float_free``).
    float_free: bool = False

    @property
    def topic(self) -> str:
        return str(self.envelope.get("topic"))

    @property
    def seq_id(self) -> int | None:
        seq = self.envelope.get("seq_id")
        return seq if type(seq) is int else None


class Consumer:
    """Subscribe with filters; hand each wanted, valid message on; remember where it is.

    ``name`` and ``state_dir`` (or ``position_path``) make the position durable (ZeroMQ
    only; an AMQP consumer's position is its durable queue ``amqp_queue``). Without them a ZeroMQ
    consumer starts at "now" (``busgate tail``).

    ``batch`` > 1 (with a durable position): up to that many messages per transaction,
    held at most ``batch_seconds``; ``before_commit(db)`` runs last inside it, and
    ``after_rollback()`` after a batch was rolled back (caches of what it wrote);
    ``after_commit()`` after each commit of the position's transaction (the recorder
    wakes its indexer).
    ``batch_savepoints=False``: the callback writes nothing through ``delivery.db`` in a
    batch (it stages, and ``before_commit`` writes), so the savepoint per message that
    undoes a failed callback's writes has nothing to undo: two statements per message
    saved (the recorder on SQLite)."""

    def __init__(self, settings: Settings, *, filters: Filters = Filters(),
                 index: TypeIndex | None = None, verifier: Verifier | None = DEFAULT,
                 name: str | None = None, state_dir: Any = None,
                 amqp_queue: str | None = None, endpoints: list[Endpoint] | None = None,
                 heartbeats: bool = False, on_reject: RejectHook | None = None,
                 position_path: Any = None, batch: int = 1, batch_seconds: float = 0.05,
                 before_commit: Callable[[sqlite3.Connection], object] | None = None,
                 after_rollback: Callable[[], object] | None = None,
                 after_commit: Callable[[], object] | None = None,
                 batch_savepoints: bool = True):
        from gateway import sources, verify

        self.settings = settings
        self.filters = filters
        self.index = index if index is not None else sources.type_index(settings)
        self.verifier = verify.from_settings(settings.signing) if verifier is DEFAULT \
            else verifier
        self.names = msgfilter.NameFilter(filters.users, filters.packages)
        self.name = name
        self.amqp_queue = amqp_queue
        self.heartbeats = heartbeats
        self.on_reject = on_reject
        self.counters = Counters()
        self.position: Position | None = None
        if position_path is not None and amqp_queue is None:
            # a file of the consumer's own choosing (the recorder: its history database,
            # so its rows and its position share one file and one transaction)
            self.position = Position(position_path)
        elif name is not None and state_dir is not None and amqp_queue is None:
            self.position = Position(path_for(state_dir, name))
        if endpoints is None and amqp_queue is None:
            from gateway import discovery

            endpoints = discovery.discover(settings)
        self.endpoints = list(endpoints or [])
        self._source: Any = None
        if batch < 1 or not 0 < batch_seconds <= MAX_BATCH_SECONDS:
            raise ValueError(f"batch must be >= 1 and batch_seconds in (0, "
                             f"{MAX_BATCH_SECONDS:g}], not {batch}, {batch_seconds}")
        self.batch = batch if self.position is not None else 1
        self.batch_seconds = batch_seconds
        self.before_commit = before_commit
        self.after_rollback = after_rollback
        self.after_commit = after_commit
        self.batch_savepoints = batch_savepoints
        #: Position moves of the open batch (publisher -> epoch, seq_id); None: no batch.
        self._pending: dict[str, tuple[str | None, int]] | None = None

    # -- life ------------------------------------------------------------------------------
    def open(self) -> Consumer:
        if self.amqp_queue is not None:
            from gateway import optional
            from gateway.amqp_subscriber import AmqpSubscriber

            optional.require("aiormq", "Reading the bus from AMQP")

            where = Endpoint("amqp", f"queue {self.amqp_queue}")
            hook = self.on_reject

            def refused(envelope: dict[str, Any], error: Exception) -> None:
                if hook is not None:
                    hook(where, envelope, error)
                else:
                    log.warning("dropping %s from AMQP queue %s: %s", envelope.get("topic"),
                                self.amqp_queue, error)

            # the subscriber verifies, and rejects a refused message without requeue
            self._source = AmqpSubscriber(self.settings.amqp, self.amqp_queue,
                                          topics=self.filters.topics,
                                          exclude=self.filters.exclude,
                                          verifier=self.verifier,
                                          on_reject=refused).__enter__()
            self.counters.rejected = self._source.rejected_by  # counted as it refuses
            return self
        from gateway import heartbeat
        from gateway.subscriber import Subscriber

        resume = self.position.load() if self.position is not None else None
        # since=now: a publisher never seen before is followed from now on, without
        # missing what is published while connecting or across a daemon restart.
        self._source = Subscriber(
            self.endpoints, topics=self.filters.topics, exclude=self.filters.exclude,
            heartbeat_topic=heartbeat.topic(self.settings.topic_prefix),
            show_heartbeats=self.heartbeats, since=time.time(), resume=resume,
            verifier=self.verifier, on_reject=self.on_reject)
        self.counters.rejected = self._source.stats.rejected  # counted as it refuses
        if self.position is not None:
            self._keep_baselines(resume or {})
        return self

    def _keep_baselines(self, resume: dict[str, tuple[str | None, int]]) -> None:
        """Record where each publisher not yet in the position stood at start: a consumer
        stopped before it handled anything then resumes from its first start, not from
        its next one (what was published while it was down is replayed, not skipped)."""
        assert self.position is not None
        fresh = {publisher: mark for publisher, mark in self._source.positions().items()
                 if publisher not in resume}
        if fresh:
            with self.position.transaction():
                for publisher, (epoch, seq_id) in fresh.items():
                    self.position.advance(publisher, epoch, seq_id)

    def close(self) -> None:
        if self._source is not None:
            source, self._source = self._source, None
            source.close()
        if self.position is not None:
            self.position.close()

    def __enter__(self) -> Consumer:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def subscriber(self) -> Any:
        """The transport's subscriber (its ``stats``, ``last_heard``)."""
        return self._source

    # -- consuming ---------------------------------------------------------------------------
    def messages(self, count: int | None = None, timeout: float | None = None,
                 idle: float | None = None) -> Iterator[Delivery]:
        """Yield wanted, valid messages; stop after ``count`` of them, after ``timeout``
        seconds, or (ZeroMQ) ``idle`` seconds without a message. A message counts as
        handled when the caller asks for the next one or stops iterating."""
        if self._source is None:
            self.open()
        given = 0
        if count is not None and count <= 0:
            return
        if self.batch > 1:
            yield from self._batches(count, timeout, idle)
            return
        # The transport is not given ``count``: it counts messages before our filters.
        batch = self._source.messages(count=None, timeout=timeout,
                                      **({} if self.amqp_queue else {"idle": idle}))
        try:
            for item in batch:
                delivery = self._accept(item)
                if delivery is None:
                    continue
                if self.position is None or delivery.seq_id is None:
                    yield delivery
                else:
                    yield from self._in_transaction(delivery)
                given += 1
                if count is not None and given >= count:
                    return
        finally:
            batch.close()

    def _in_transaction(self, delivery: Delivery) -> Iterator[Delivery]:
        """Yield ``delivery`` inside the position's transaction; commit with the position
        once the caller is done with it."""
        assert self.position is not None
        db = delivery.db = self.position.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield delivery
        except GeneratorExit:  # the caller stopped after taking it: handled
            self._advance(delivery)
            db.execute("COMMIT")
            self._committed()
            raise
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._advance(delivery)
        db.execute("COMMIT")
        self._committed()

    def _committed(self) -> None:
        if self.after_commit is not None:
            self.after_commit()

    def _batches(self, count: int | None, timeout: float | None,
                 idle: float | None) -> Iterator[Delivery]:
        """:meth:`messages` in batches: each read of the transport lasts at most
        ``batch_seconds``, and whatever it gave commits at its end (or at ``batch``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = time.monotonic()
        given = 0
        while True:
            now = time.monotonic()
            if (deadline is not None and now >= deadline) or \
                    (idle is not None and now - last >= idle):
                return
            window = self.batch_seconds if deadline is None \
                else min(self.batch_seconds, deadline - now)
            source = self._source.messages(count=None, timeout=window,
                                           **({} if idle is None
                                              else {"idle": last + idle - now}))
            in_batch, begun = 0, 0.0
            try:
                for item in source:
                    last = time.monotonic()
                    delivery = self._accept(item)
                    if delivery is None:
                        continue
                    if self._pending is None:
                        self._begin()
                        begun = time.monotonic()
                    delivery.db, delivery.batched = self.position.db, True  # type: ignore[union-attr]
                    try:
                        yield delivery
                    except GeneratorExit:  # the caller stopped after taking it: handled
                        self._note(delivery)
                        self._commit()
                        raise
                    except BaseException:
                        self._rollback()
                        raise
                    self._note(delivery)
                    given += 1
                    in_batch += 1
                    if (count is not None and given >= count) or in_batch >= self.batch \
                            or time.monotonic() - begun >= self.batch_seconds:
                        break  # (the transport serves its backlog without a look at time)
            finally:
                source.close()
            if self._pending is not None:
                self._commit()
            if count is not None and given >= count:
                return

    def _begin(self) -> None:
        assert self.position is not None
        self.position.db.execute("BEGIN IMMEDIATE")
        self._pending = {}

    def _note(self, delivery: Delivery) -> None:
        """The batch's position moves past ``delivery`` (written at commit)."""
        if delivery.seq_id is None or self._pending is None:
            return
        epoch = delivery.envelope.get("publisher_epoch")
        publisher = delivery.publisher or str(delivery.envelope.get("publisher"))
        self._pending[publisher] = (epoch if isinstance(epoch, str) else None,
                                    delivery.seq_id)

    def _commit(self) -> None:
        assert self.position is not None and self._pending is not None
        db = self.position.db
        try:
            if self.before_commit is not None:
                self.before_commit(db)
            for publisher, (epoch, seq_id) in self._pending.items():
                self.position.advance(publisher, epoch, seq_id)
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._pending = None
        self._committed()

    def _rollback(self) -> None:
        assert self.position is not None
        self._pending = None
        if self.position.db.in_transaction:
            self.position.db.execute("ROLLBACK")
        self.position.forget()  # its cache may hold the batch's moves
        if self.after_rollback is not None:
            self.after_rollback()

    def run(self, callback: Callable[[Delivery], object], *, count: int | None = None,
            timeout: float | None = None, idle: float | None = None) -> int:
        """Call ``callback(delivery)`` per message (policy: see the module docstring).
        Returns how many messages were handled."""
        handled = 0
        deliveries = self.messages(count=count, timeout=timeout, idle=idle)
        try:
            for delivery in deliveries:
                handled += 1
                savepoint = delivery.db is not None and \
                    (self.batch_savepoints or not delivery.batched)
                if savepoint:
                    delivery.db.execute("SAVEPOINT callback")  # type: ignore[union-attr]
                try:
                    callback(delivery)
                except StopConsumer:
                    break
                except NotHandled as exc:
                    # thrown into the generator: its transaction rolls back (a plain raise
                    # would close it later, as handled, and move the position past it)
                    deliveries.throw(exc)
                except Exception:
                    self.counters.errors += 1
                    if savepoint:
                        delivery.db.execute("ROLLBACK TO callback")  # type: ignore[union-attr]
                    log.exception("consumer %s: the callback failed on %s seq_id %s; going on",
                                  self.name or "(unnamed)", delivery.topic, delivery.seq_id)
                if savepoint:
                    delivery.db.execute("RELEASE callback")  # type: ignore[union-attr]
        finally:  # now, not when a traceback holding this frame is freed
            deliveries.close()
        return handled

    # -- one message ---------------------------------------------------------------------------
    def _accept(self, item: Any) -> Delivery | None:
        """The Delivery for a message from the transport, or ``None`` (filtered, refused)."""
        from gateway import display

        envelope = item.envelope
        self.counters.received += 1
        if self.names and not self.names.matches(envelope,
                                                 display.message_of(envelope, self.index)):
            self.counters.filtered += 1
            self._skip(Delivery(envelope, publisher=getattr(item, "publisher", None)))
            return None
        self.counters.delivered += 1
        return Delivery(envelope, replayed=item.replayed,
                        publisher=getattr(item, "publisher", None),
                        float_free=getattr(item, "float_free", False))

    def _skip(self, delivery: Delivery) -> None:
        """A filtered message is handled too: a restart must not read it again."""
        if self.position is None or delivery.seq_id is None:
            return
        if self._pending is not None:  # inside a batch: it commits with it
            self._note(delivery)
            return
        with self.position.transaction():
            self._advance(delivery)

    def _advance(self, delivery: Delivery) -> None:
        assert self.position is not None and delivery.seq_id is not None
        epoch = delivery.envelope.get("publisher_epoch")
        publisher = delivery.publisher or str(delivery.envelope.get("publisher"))
        self.position.advance(publisher, epoch if isinstance(epoch, str)
                              else None, delivery.seq_id)

    def stats(self) -> dict[str, Any]:
        """The counters, plus the transport's own (gap repair, wire rejects)."""
        out = self.counters.as_dict()
        source = self._source
        if source is not None and hasattr(source, "stats"):
            s = source.stats
            out["transport"] = {"replayed": s.replayed, "duplicates": s.duplicates,
                                "invalid": s.invalid, "unrepaired": s.unrepaired,
                                "resets": s.resets}
        elif source is not None:
            out["transport"] = {"wire_rejected": source.rejected}
        return out
