"""Subscribe to publishers and hand back every message, in order, repairing gaps.

One SUB socket per publisher endpoint, so a message is always known to come
from a given endpoint. ``seq_id`` is tracked per publisher and epoch; a jump
(in a live message, or revealed by a heartbeat's ``last_seq_id``) is filled
from that publisher's replay endpoint, page by page (any gap size), before the
live message is handed on. A message whose ``seq_id`` was already seen is
dropped, so a publisher's re-send after a crash reaches the application once.

What is trusted: a sequenced message's ``publisher`` and ``publisher_epoch``
(the daemon writes them into the outbox; users cannot). A heartbeat is an
unsequenced message on the heartbeat topic that names a publisher this endpoint
serves, and its ``last_seq_id`` is only believed as far as the replay endpoint
can deliver (its reply's ``last_seq_id``). A new epoch (the publisher's state
was wiped) restarts tracking at seq_id 0 instead of dropping every message as
already seen. Replies must name the publisher and epoch being repaired.

With ``since`` (``busgate tail`` passes its start time) the subscriber asks each
replay endpoint where its publisher stands when it starts, so nothing published
after the start is missed, even before the SUB connection is up or across a
restart of the daemon; a publisher that could not be asked is caught up by
time (``since`` on) at first contact.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from gateway import envelope as env
from gateway import heartbeat, replay
from gateway.discovery import Endpoint
from gateway.errors import EnvelopeError

if TYPE_CHECKING:
    from gateway.verify import SignatureError, Verifier

#: Called with (endpoint, envelope, error) for each message the verifier refused.
RejectHook = Callable[[Endpoint, dict[str, Any], "SignatureError"], None]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    topic: str
    envelope: dict[str, Any]
    endpoint: Endpoint
    replayed: bool = False
    #: The envelope was read from the wire holding no float (``envelope.decode_flagged``):
    #: its canonical JSON may be written without looking for floats again.
    float_free: bool = False

    @property
    def publisher(self) -> str:
        return str(self.envelope.get("publisher") or self.endpoint.name)

    @property
    def seq_id(self) -> int | None:
        return self.envelope.get("seq_id")

    @property
    def body(self) -> Any:
        return self.envelope.get("msg")


@dataclass
class Stats:
    received: int = 0
    replayed: int = 0
    duplicates: int = 0
    invalid: int = 0
    unrepaired: int = 0
    #: seq_ids the publisher's outbox retention removed before they could be replayed
    pruned: int = 0
    resets: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)
    #: Messages the verifier refused, by reason (``gateway.verify.REASONS``).
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass
class _Track:
    """Where one publisher stands for us: its epoch and the last seq_id handed on."""

    epoch: str | None
    last: int


@dataclass
class _Repair:
    """A gap to fill from ``endpoint``'s replay: seq_ids ``lo``..``hi`` of one epoch."""

    endpoint: Endpoint
    publisher: str
    epoch: str | None
    lo: int
    hi: int
    since: float | None = None  # catch up by time (first contact after an unanswered start)
    after: int = 0
    tries: int = 0  # pages asked that got no answer in time (REPAIR_TRIES)


_FAR_FUTURE = 2 ** 53
#: Times a repair's page is asked for when the replay endpoint does not answer within
#: ``replay_timeout`` (a loaded or restarting publisher) before its seq_ids count as
#: unrepaired: a gap given up is lost to this subscriber, and to a durable consumer for
#: good once its position moves past it. Each try waits ``replay_timeout`` while live
#: messages queue behind the repair (the socket's RCVHWM bounds them).
REPAIR_TRIES = 3
#: Most topics whose filter verdict a subscriber remembers (then it starts again).
WANTED_CACHE = 4096


class Subscriber:
    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        topics: Iterable[str] = (),
        exclude: Iterable[str] = (),
        heartbeat_topic: str | None = None,
        show_heartbeats: bool = False,
        resume_from: int | None = None,
        resume: Mapping[str, tuple[str | None, int]] | None = None,
        since: float | None = None,
        rcvhwm: int = 100000,
        replay_timeout: float = 5.0,
        context: zmq.Context | None = None,
        verifier: Verifier | None = None,
        on_reject: RejectHook | None = None,
    ):
        self.endpoints = list(endpoints)
        #: Checks every message (live, replayed, heartbeat) before it counts for anything.
        self.verifier = verifier
        self.on_reject = on_reject
        self.topics = [t for t in topics if t] or [""]
        self.exclude = tuple(exclude)
        self._wanted_cache: dict[str, bool] = {}
        self.show_heartbeats = show_heartbeats
        self.resume_from = resume_from
        self.since = since
        self.replay_timeout = replay_timeout
        self.stats = Stats()
        #: monotonic time of the last frame from any publisher (``tail`` warns on silence)
        self.last_heard = time.monotonic()
        self._tracks: dict[str, _Track] = {
            publisher: _Track(epoch, last) for publisher, (epoch, last) in (resume or {}).items()}
        self._served: dict[str, set[str]] = {}  # endpoint URL -> publishers seen there
        self._backlog: deque[Message | _Repair] = deque()
        self._context = context or zmq.Context.instance()
        self._poller = zmq.Poller()
        self._sockets: dict[zmq.Socket, Endpoint] = {}
        prefixes = list(self.topics)
        if heartbeat_topic and "" not in prefixes:
            prefixes.append(heartbeat_topic)
        for endpoint in self.endpoints:
            sock = self._context.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            for prefix in prefixes:
                sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
            sock.connect(endpoint.publish)
            self._poller.register(sock, zmq.POLLIN)
            self._sockets[sock] = endpoint
        if (since is not None or resume) and resume_from is None:
            for endpoint in self.endpoints:
                self._baseline(endpoint)

    def positions(self) -> dict[str, tuple[str | None, int]]:
        """Publisher -> (epoch, last seq_id) of every publisher tracked now: right after
        start, the resumed positions and where the others stood (their baselines)."""
        return {publisher: (track.epoch, track.last) for publisher, track in self._tracks.items()}

    def close(self) -> None:
        for sock in self._sockets:
            sock.close(0)
        self._sockets.clear()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Message]:
        return self.messages()

    def messages(self, count: int | None = None, timeout: float | None = None,
                 idle: float | None = None) -> Iterator[Message]:
        """Yield messages; stop after ``count``, after ``timeout`` seconds in all, or after
        ``idle`` seconds without a message."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        delivered = 0
        last_activity = time.monotonic()
        while count is None or delivered < count:
            if self._backlog:  # (a new epoch replaces the deque: no alias of it is kept)
                handed = delivered
                while self._backlog:
                    item = self._backlog.popleft()
                    if type(item) is _Repair:
                        self._repair_page(item)
                        continue
                    yield item
                    delivered += 1
                    if count is not None and delivered >= count:
                        return
                if delivered != handed:  # idle counts from the last message handed out
                    last_activity = time.monotonic()
            now = time.monotonic()
            waits = [1000.0]
            if deadline is not None:
                waits.append((deadline - now) * 1000)
            if idle is not None:
                waits.append((last_activity + idle - now) * 1000)
            wait = min(waits)
            if wait <= 0:
                return
            for sock, _ in self._poller.poll(wait):
                endpoint, receive, accept = self._sockets[sock], sock.recv_multipart, self._accept
                for _ in range(1000):  # then serve the backlog, then read on
                    try:
                        frames = receive(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    accept(frames, endpoint)

    # -- gap tracking ------------------------------------------------------------------
    def _accept(self, frames: list[bytes], endpoint: Endpoint) -> None:
        self.last_heard = time.monotonic()
        try:
            envelope, float_free = env.decode_flagged(frames)
        except EnvelopeError as exc:
            self.stats.invalid += 1
            log.warning("ignoring an invalid message from %s: %s", endpoint.publish, exc)
            return
        if self.verifier is not None and \
                not self._verified(envelope, endpoint, self._in_sequence(envelope, endpoint)):
            return  # before any tracking: a forged seq_id or heartbeat moves nothing
        seq = envelope.get("seq_id")
        if type(seq) is not int:  # a heartbeat, or a message no outbox numbered
            if heartbeat.is_heartbeat(envelope):
                self._heartbeat(envelope, endpoint)
                return
            self.stats.received += 1
            if self._wanted(envelope["topic"]):
                self._backlog.append(Message(envelope["topic"], envelope, endpoint,
                                             float_free=float_free))
            return
        # The usual case, decided in a few lookups: the next seq_id of a publisher tracked
        # in this epoch and already seen on this endpoint (what _sequenced would conclude).
        publisher = envelope.get("publisher")
        track = self._tracks.get(publisher) if type(publisher) is str and publisher else None
        if track is not None and seq == track.last + 1 and \
                envelope.get("publisher_epoch") == track.epoch and \
                publisher in self._served.get(endpoint.publish, ()):
            track.last = seq
            self.stats.last_seq[publisher] = seq
            self.stats.received += 1
            topic = envelope["topic"]
            wanted = self._wanted_cache.get(topic)
            if wanted is None:
                wanted = self._wanted(topic)
            if wanted:
                self._backlog.append(Message(topic, envelope, endpoint, float_free=float_free))
            return
        self._sequenced(envelope, endpoint, seq, float_free)

    def _sequenced(self, envelope: dict[str, Any], endpoint: Endpoint, seq: int,
                   float_free: bool = False) -> None:
        """Track a numbered message: first contact, a new epoch, a duplicate or a gap."""
        publisher = str(envelope.get("publisher") or endpoint.name)
        self._served.setdefault(endpoint.publish, set()).add(publisher)
        epoch = _epoch(envelope)
        track = self._track(publisher, epoch, endpoint, seq)
        if track is None:  # first contact, nothing to catch up: start here
            track = self._tracks[publisher] = _Track(epoch, seq - 1)
        if seq <= track.last:
            self.stats.duplicates += 1
            return
        if seq > track.last + 1:
            self._gap(endpoint, publisher, track, seq - 1)
        track.last = seq
        self.stats.last_seq[publisher] = seq
        self.stats.received += 1
        if self._wanted(envelope["topic"]):
            self._backlog.append(Message(envelope["topic"], envelope, endpoint,
                                         float_free=float_free))

    def _in_sequence(self, envelope: dict[str, Any], endpoint: Endpoint) -> bool:
        """Whether ``envelope`` is the next news of a publisher tracked in this epoch: then
        seq_id tracking already refuses a replayed old message, and the age check is
        skipped, so a backlog sent after the publisher was down a long time still counts."""
        seq = envelope.get("seq_id")
        track = self._tracks.get(str(envelope.get("publisher") or endpoint.name))
        return type(seq) is int and track is not None and track.epoch is not None \
            and _epoch(envelope) == track.epoch and seq > track.last

    def _verified(self, envelope: dict[str, Any], endpoint: Endpoint, replayed: bool) -> bool:
        """Whether the verifier accepts ``envelope``; a refusal is counted by reason."""
        from gateway.verify import SignatureError

        assert self.verifier is not None
        try:
            self.verifier.check(envelope, replayed=replayed)
        except SignatureError as exc:
            self.stats.rejected[exc.reason] = self.stats.rejected.get(exc.reason, 0) + 1
            if self.on_reject is not None:
                self.on_reject(endpoint, envelope, exc)
            else:
                log.warning("dropping %s from %s: %s", envelope.get("topic"),
                            endpoint.publish, exc)
            return False
        return True

    def _heartbeat(self, envelope: dict[str, Any], endpoint: Endpoint) -> None:
        body = envelope.get("msg")
        publisher = envelope.get("publisher")
        served = self._served.get(endpoint.publish)
        last = body.get("last_seq_id") if isinstance(body, dict) else None
        # The publisher this endpoint serves (seen in its sequenced messages or replay
        # answers), else the one it is configured under.
        trusted = isinstance(publisher, str) and (
            publisher in served if served else publisher == endpoint.name)
        if not trusted or type(last) is not int or last < 0:
            self.stats.invalid += 1
            log.warning("ignoring a heartbeat from %s that names publisher %r or seq_id %r",
                        endpoint.publish, publisher, last)
            return
        assert isinstance(publisher, str)
        self._served.setdefault(endpoint.publish, set()).add(publisher)
        track = self._track(publisher, _epoch(envelope), endpoint, last + 1)
        if track is not None and last > track.last:
            self._gap(endpoint, publisher, track, last, live=False)
        if self.show_heartbeats and self._wanted(envelope["topic"]):
            self._backlog.append(Message(envelope["topic"], envelope, endpoint))

    def _track(self, publisher: str, epoch: str | None, endpoint: Endpoint,
               upto: int) -> _Track | None:
        """This publisher's track, reset on a new epoch; ``None`` for a first contact that
        needs no catching up (the caller starts tracking at ``upto``)."""
        track = self._tracks.get(publisher)
        if track is None:
            if self.resume_from is not None:
                track = self._tracks[publisher] = _Track(epoch, self.resume_from)
            elif self.since is not None and endpoint.replay:
                # Nobody answered at start: catch up on everything stored since then.
                track = self._tracks[publisher] = _Track(epoch, 0)
                self._backlog.append(_Repair(endpoint, publisher, epoch, 1, upto - 1,
                                             since=self.since))
                track.last = upto - 1
                self.stats.last_seq[publisher] = track.last
                return track
            else:
                return None
        if epoch is not None and track.epoch is not None and epoch != track.epoch:
            log.warning("%s has a new epoch (its state was reset): seq_ids start again",
                        publisher)
            self.stats.resets += 1
            self._backlog = deque(item for item in self._backlog
                                  if not (isinstance(item, _Repair)
                                          and item.publisher == publisher))
            track.epoch, track.last = epoch, 0
        elif track.epoch is None:
            track.epoch = epoch
        return track

    def _gap(self, endpoint: Endpoint, publisher: str, track: _Track, hi: int, *,
             live: bool = True) -> None:
        """Queue the repair of ``track.last+1``..``hi`` and move the track to ``hi``; a
        heartbeat's claim is pulled back to what replay has when the first page comes."""
        lo = track.last + 1
        if not endpoint.replay:
            if live:  # a heartbeat's claim cannot be checked without replay: not believed
                self.stats.unrepaired += hi - lo + 1
                log.warning("%s: missed seq_id %d-%d and it has no replay endpoint",
                            publisher, lo, hi)
                track.last = hi
            return
        self._backlog.append(_Repair(endpoint, publisher, track.epoch, lo, hi))
        track.last = hi

    def _repair_page(self, job: _Repair) -> None:
        """Fetch one page of ``job``; queue its messages, then the rest of the job."""
        track = self._tracks.get(job.publisher)
        if track is None or track.epoch != job.epoch:
            return  # the publisher was reset meanwhile: this gap no longer exists
        request: dict[str, Any] = (
            {"time": [int(job.since), _FAR_FUTURE]} if job.since is not None
            else {"seq_id_range": [job.lo, job.hi]})
        if job.after:
            request["after_seq_id"] = job.after
        if self.topics != [""]:
            request["topics"] = self.topics
        assert job.endpoint.replay
        try:
            page = next(replay.pages(job.endpoint.replay, request, timeout=self.replay_timeout,
                                     context=self._context, max_pages=1))
        except replay.ReplayTimeout as exc:
            job.tries += 1
            if job.tries < REPAIR_TRIES:
                log.warning("%s: %s; asking again for seq_id %d-%d (try %d of %d)",
                            job.publisher, exc, max(job.lo, job.after + 1), job.hi,
                            job.tries + 1, REPAIR_TRIES)
                self._backlog.appendleft(job)
                return
            self._unrepaired(job, exc)
            return
        except (replay.ReplayError, StopIteration) as exc:
            self._unrepaired(job, exc)
            return
        job.tries = 0  # (the tries are per page)
        if page.publisher not in (None, job.publisher) or \
                (job.epoch is not None and page.publisher_epoch not in (None, job.epoch)):
            log.warning("%s: replay endpoint %s answers for %s (epoch %s), not for this "
                        "publisher; gap left unrepaired", job.publisher, job.endpoint.replay,
                        page.publisher, page.publisher_epoch)
            self.stats.unrepaired += job.hi - job.lo + 1
            return
        first = max(job.lo, job.after + 1)
        if job.since is None and page.pruned_seq_id >= first:
            lost = min(page.pruned_seq_id, job.hi) - first + 1
            self.stats.pruned += lost
            log.warning("%s: seq_id %d-%d were pruned by its outbox retention before they "
                        "could be replayed (%d messages lost)", job.publisher, first,
                        first + lost - 1, lost)
        if page.last_seq_id < job.hi:
            # A heartbeat claimed more than is stored: believe only what replay has.
            stored = max(page.last_seq_id, job.lo - 1)
            if track.last == job.hi:
                track.last = stored
                self.stats.last_seq[job.publisher] = stored
            job.hi = stored
        out: list[Message] = []
        for envelope in page.envelopes:
            seq = envelope.get("seq_id")
            if type(seq) is not int or not job.lo <= seq <= job.hi:
                continue
            if envelope.get("publisher", job.publisher) != job.publisher or \
                    _epoch(envelope) not in (None, job.epoch):
                self.stats.invalid += 1
                continue
            try:
                env.check(envelope)
            except EnvelopeError:
                self.stats.invalid += 1
                continue
            if self.verifier is not None and \
                    not self._verified(envelope, job.endpoint, True):
                continue
            if self._wanted(envelope["topic"]):
                out.append(Message(envelope["topic"], envelope, job.endpoint, replayed=True))
        self.stats.replayed += len(out)
        rest = page.more and page.after_seq_id < job.hi
        if rest:
            job.after = page.after_seq_id
            self._backlog.appendleft(job)
        self._backlog.extendleft(reversed(out))

    def _unrepaired(self, job: _Repair, exc: BaseException) -> None:
        """Give up the rest of ``job``: its seq_ids are counted and logged as missed."""
        missed = job.hi - max(job.lo, job.after + 1) + 1
        self.stats.unrepaired += max(0, missed)
        log.warning("%s: cannot replay seq_id %d-%d: %s", job.publisher,
                    max(job.lo, job.after + 1), job.hi, exc)

    def _baseline(self, endpoint: Endpoint) -> None:
        """Ask where the publisher stands now, so that what follows is caught up."""
        if not endpoint.replay:
            return
        try:
            page = next(replay.pages(endpoint.replay, {"seq_id": 0}, context=self._context,
                                     timeout=min(self.replay_timeout, 2.0), max_pages=1))
        except (replay.ReplayError, StopIteration) as exc:
            log.info("%s: no replay answer at start (%s); catching up by time later",
                     endpoint.replay, exc)
            return
        if page.publisher:
            self._served.setdefault(endpoint.publish, set()).add(page.publisher)
            if page.publisher in self._tracks:  # resumed: catch up from where we stood
                track = self._track(page.publisher, page.publisher_epoch, endpoint,
                                    page.last_seq_id + 1)
                if track is not None and page.last_seq_id > track.last:
                    self._gap(endpoint, page.publisher, track, page.last_seq_id, live=False)
                return
            self._tracks[page.publisher] = _Track(page.publisher_epoch, page.last_seq_id)

    def _wanted(self, topic: str) -> bool:
        """Whether ``topic`` passes ``topics`` and ``exclude``; remembered per topic (a bus
        has few), at most :data:`WANTED_CACHE` of them."""
        wanted = topic.startswith(tuple(self.topics)) and \
            not topic.startswith(tuple(self.exclude))
        if len(self._wanted_cache) >= WANTED_CACHE:
            self._wanted_cache.clear()
        self._wanted_cache[topic] = wanted
        return wanted


def _epoch(envelope: dict[str, Any]) -> str | None:
    epoch = envelope.get("publisher_epoch")
    return epoch if isinstance(epoch, str) else None
