"""The dashboard's live feed: new messages as Server-Sent Events (``/v2/stream``).

Why one poller for every client: the recorder may be another process, so the web
server learns of new messages by reading the store; one task reading
:meth:`~gateway.history.store.HistoryStore.since` and handing each new message to
every open stream costs one query per poll however many pages are open, where a
poller per client would multiply the load by the audience.

Bounds: at most ``max_streams`` streams (the next is a 503), each with a queue of
``queue_size`` messages. When a burst fills a client's queue the poller gives it up to
``stall`` seconds to make room (a fast reader always does); a client that still has
none (a stalled phone, a reader that stopped reading) is cut off and its queue
dropped, so it delays the others once, by ``stall`` at most, and never again; its
browser reconnects with ``Last-Event-ID`` and resumes from the last message it got
(at most ``resume`` messages back; further behind, it is told of the gap).
Keep-alive comments keep idle streams open through proxies. ``stall``, ``keepalive`` and
``resume`` are ``[history] stream_stall``, ``stream_keepalive`` and ``stream_resume``.

Why an event's id is a store :class:`~gateway.history.store.Position`, not the message id:
the feed is read in commit order, which on PostgreSQL is not id order (two writers), so
"resume after id N" would be ambiguous there; the position is exact on both stores.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace

from starlette.concurrency import run_in_threadpool

from gateway.history import query as q
from gateway.history.store import HistoryStore, Position, Stored
from gateway.wakeup import wait_set

log = logging.getLogger(__name__)

#: The ``/raw`` parameters the stream (and the dashboard's list) filter on.
FILTERS = ("category", "topic", "user", "package",
           "not_category", "not_topic", "not_user", "not_package")
#: Rows read per poll (a burst larger than this is read over several polls, no wait).
BATCH = 500


class StreamsFull(Exception):
    """``max_streams`` streams are open already."""


@dataclass(frozen=True)
class Event:
    """One message as the stream sends it: what filters look at, and its SSE frame."""

    id: int
    category: str
    topic: str
    users: frozenset[str]
    packages: frozenset[str]
    #: The ``data:`` line's JSON (one line: JSON escapes every newline).
    data: str
    #: Its place in the feed (:meth:`Position.token`), the SSE id a browser resumes from.
    at: str = ""

    def frame(self) -> str:
        return f"id: {self.at or self.id}\ndata: {self.data}\n\n"


def parse_filter(items: Iterable[tuple[str, str]], *, max_values: int,
                 extra: tuple[str, ...] = ()) -> q.Query:
    """The filter of a dashboard query string (empty values ignored: a plain GET form
    sends every field); any name but :data:`FILTERS` and ``extra`` is a 400."""
    kept = []
    for name, value in items:
        if name in extra:
            continue
        if name not in FILTERS:
            raise q.BadParameter(name, f"not a filter here (valid: {', '.join(FILTERS)})")
        if value.strip():
            kept.append((name, value.strip()))
    return q.parse(kept, max_values=max_values)


def matches(query: q.Query, event: Event) -> bool:
    """``/raw``'s rule: any value within a kind, every kind given, no ``not_*`` value."""
    if query.categories and event.category not in query.categories:
        return False
    if query.topics and event.topic not in query.topics:
        return False
    if query.users and event.users.isdisjoint(query.users):
        return False
    if query.packages and event.packages.isdisjoint(query.packages):
        return False
    return not (event.category in query.not_categories or event.topic in query.not_topics
                or not event.users.isdisjoint(query.not_users)
                or not event.packages.isdisjoint(query.not_packages))


class Client:
    def __init__(self, query: q.Query, size: int):
        self.query = query
        #: Events to send; ``None`` last when the client was cut off.
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(size + 1)
        self.size = size
        #: Set when the client takes an event (the poller waits on it when the queue is full).
        self.room = asyncio.Event()
        #: Why the stream ends, once it must: "behind" (cut off) or "closing" (shut-down).
        self.reason = "behind"

    def full(self) -> bool:
        return self.queue.qsize() >= self.size


class Broadcaster:
    """One store poller feeding every open stream."""

    def __init__(self, store: HistoryStore, render: Callable[[Stored], Event], *,
                 max_streams: int = 100, queue_size: int = 256, poll: float = 0.5,
                 keepalive: float = 15.0, resume: int = 1000, stall: float = 1.0):
        self.store = store
        self.render = render
        self.max_streams = max_streams
        self.queue_size = queue_size
        self.poll = poll
        self.keepalive = keepalive
        self.resume = resume
        self.stall = stall
        self.clients: set[Client] = set()
        #: Last position handed out (None while no poller runs: re-read at the next start).
        self.position: Position | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: Clients cut off for falling behind (since start).
        self.cut_off = 0

    def _fetch(self, after: Position, limit: int) -> list[tuple[Position, Event | None]]:
        """The rows after ``after`` as events (``None`` for a row that cannot be shown:
        it is skipped, and the position still moves past it)."""
        out: list[tuple[Position, Event | None]] = []
        for position, row in self.store.since(after, limit):
            try:
                out.append((position, replace(self.render(row), at=position.token())))
            except Exception as exc:  # a damaged row must not stop the stream for all
                log.warning("history web: message %s cannot be shown live: %s",
                            row.msg_id, exc)
                out.append((position, None))
        return out

    async def open(self, query: q.Query,
                   after: Position | int | None) -> tuple[Client, list[Event], bool]:
        """Register a stream; its backlog after ``after`` (resume: a position, or a plain
        message id whose position is looked up), and whether messages were missed beyond
        the resume window (or after a message id no longer stored)."""
        gap = False
        if isinstance(after, int):
            after = await run_in_threadpool(self.store.position_of, after)
            gap = after is None
        async with self._lock:
            if len(self.clients) >= self.max_streams:
                raise StreamsFull(f"{self.max_streams} live streams are open "
                                  "(history.max_streams)")
            if self.position is None:
                self.position = await run_in_threadpool(self.store.last_position)
            client = Client(query, self.queue_size)
            snapshot = self.position
            self.clients.add(client)  # from here the poller queues everything after snapshot
            if self._task is None:
                self._task = asyncio.create_task(self._run())
        backlog: list[Event] = []
        if after is not None and after < snapshot:
            try:
                fetched = await run_in_threadpool(self._fetch, after, self.resume + 1)
            except BaseException:
                self.close(client)
                raise
            fetched = [(i, e) for i, e in fetched if i <= snapshot]
            if len(fetched) > self.resume:
                gap = True  # too far behind: say so rather than send a partial past
            else:
                backlog = [e for _, e in fetched if e is not None and matches(query, e)]
        return client, backlog, gap

    def close(self, client: Client) -> None:
        self.clients.discard(client)

    async def _dispatch(self, event: Event) -> None:
        """Queue ``event`` for every client it matches; a full queue gets ``stall``
        seconds to make room, then its client is cut off."""
        full = [c for c in self.clients if c.full() and matches(c.query, event)]
        if full:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.stall
            for client in full:
                while client.full() and client in self.clients:
                    client.room.clear()
                    if not await wait_set(client.room, deadline - loop.time()):
                        break
        # the takers after the wait: a stream opened meanwhile expects this event too
        takers = [c for c in self.clients if matches(c.query, event)]
        for client in takers:
            if client.full():
                self._cut(client)
            else:
                client.queue.put_nowait(event)

    def _cut(self, client: Client) -> None:
        """Drop a client that fell behind: its queue is emptied (it resumes from what it
        really got) and ends with ``None``."""
        self.clients.discard(client)
        self.cut_off += 1
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(None)
        log.info("history web: a live stream fell %d messages behind and was cut off",
                 client.size)

    async def _run(self) -> None:
        try:
            while self.clients:
                assert self.position is not None
                try:
                    events = await run_in_threadpool(self._fetch, self.position, BATCH)
                except Exception as exc:  # a timeout or locked file: try again next poll
                    log.warning("history web: the live stream cannot read the store: %s", exc)
                    events = []
                for at, event in events:
                    # position moves with each dispatch: a stream opened while the poller
                    # waits gets every later id from its queue, each once
                    if event is not None:
                        await self._dispatch(event)
                    self.position = at
                if len(events) < BATCH:
                    await asyncio.sleep(self.poll)
        finally:
            self._task = None
            self.position = None

    async def frames(self, client: Client, backlog: list[Event], gap: bool) -> AsyncIterator[str]:
        """The stream's text: retry hint, backlog, then live events and keep-alives."""
        try:
            yield "retry: 2000\n\n"
            if gap:
                yield "event: gap\ndata: {}\n\n"
            for event in backlog:
                yield event.frame()
            while True:
                try:  # not wait_for: it can lose a cancel (gateway.wakeup)
                    async with asyncio.timeout(self.keepalive):
                        event = await client.queue.get()
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                client.room.set()
                if event is None:
                    yield f"event: {client.reason}\ndata: {{}}\n\n"
                    return
                yield event.frame()
        finally:
            self.close(client)

    async def stop(self) -> None:
        """End every stream (server shut-down)."""
        for client in list(self.clients):
            self.clients.discard(client)
            client.reason = "closing"
            while not client.queue.empty():
                client.queue.get_nowait()
            client.queue.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
