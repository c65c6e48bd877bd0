"""Replay: answer fedmsg-style queries for missed messages from the outbox.

Protocol (fedmsg's, with its defects fixed): the client sends one JSON frame
with any of ``seq_id``, ``seq_ids``, ``seq_id_range`` ([lo, hi], inclusive),
``msg_id``, ``msg_ids``, ``time`` ([t0, t1], epoch seconds), ORed together, and
optionally ``topics`` (busgate extension: topic prefixes to keep). The reply is
one frame per matching envelope, in seq_id order; or a single frame
``error: '<text>'``. A query that matches nothing is answered
``error: 'no messages match'`` as in fedmsg; :func:`query` turns it into ``[]``.

Replies are bounded by ``replay_max_messages`` and ``replay_max_bytes``. A
plain (fedmsg) request whose answer is larger gets an error. Paging (busgate
extension, ignored by nobody because fedmsg clients never send it): a request
with ``"paged": true`` gets at most one reply's worth of envelopes followed by
one trailer frame ``{"busgate_replay": {"more": bool, "after_seq_id": N,
"last_seq_id": L, "publisher": P, "publisher_epoch": E}}``; with ``more`` the
client sends the same request again with ``"after_seq_id": N`` (only seq_ids
above N), until ``more`` is false. ``last_seq_id`` is the newest seq_id stored,
so a client can bound what a heartbeat claims; a paged query matching nothing
is the trailer alone. The trailer's ``pruned_seq_id`` is the highest seq_id outbox
retention removed (``gateway.retention``): a client asking at or below it learns the
messages are gone, and a plain request that matches nothing for that reason gets an
error saying so instead of ``no messages match``.

The server is a ROUTER socket so that no request, however malformed (several
frames, no REQ delimiter, garbage, an oversize frame), can stop it: it answers
an error when the client can read one, and hangs up on a client that sends more
than it may (see :class:`gateway.transports.peers.PeerGuard`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from gateway import dedup
from gateway.envelope import uid_of_msg_id
from gateway.store import Store
from gateway.transports.peers import PeerGuard, PeerLimits
from gateway.transports.zmq import bind

log = logging.getLogger(__name__)

NO_MATCH = "no messages match"
KNOWN_KEYS = ("seq_id", "seq_ids", "seq_id_range", "msg_id", "msg_ids", "time", "topics",
              "paged", "after_seq_id")
MAX_LIST = 10000
TRAILER = "busgate_replay"
DEFAULT_MAX_BYTES = 8 * 1024 * 1024


class QueryError(ValueError):
    """A replay query that cannot be answered as asked."""


def plan(query: Any) -> tuple[str, list[Any]]:
    """Validate a decoded query; return an SQL condition over ``outbox`` and its params."""
    if not isinstance(query, dict) or not query:
        raise QueryError("query must be a non-empty JSON object")
    unknown = sorted(set(query) - set(KNOWN_KEYS))
    if unknown:
        raise QueryError(f"unknown query key(s): {', '.join(unknown)}; "
                         f"known: {', '.join(KNOWN_KEYS)}")
    clauses: list[str] = []
    params: list[Any] = []
    if "seq_id" in query:
        clauses.append("seq_id = ?")
        params.append(_int(query["seq_id"], "seq_id"))
    if "seq_ids" in query:
        ids = _list(query["seq_ids"], "seq_ids", _int)
        clauses.append(f"seq_id IN ({','.join('?' * len(ids))})")
        params += ids
    if "seq_id_range" in query:
        lo, hi = _pair(query["seq_id_range"], "seq_id_range", _int)
        clauses.append("seq_id BETWEEN ? AND ?")
        params += [lo, hi]
    if "msg_id" in query:
        clauses.append(dedup.UID_MATCH)  # through the per-run uid index
        params.append(_uid(query["msg_id"], "msg_id"))
    if "msg_ids" in query:
        ids = _list(query["msg_ids"], "msg_ids", _uid)
        clauses.append(f"({dedup.RUN_EXPR} IN {dedup.ALL_RUNS}"
                       f" AND uid IN ({','.join('?' * len(ids))}))")
        params += ids
    if "time" in query:
        t0, t1 = _pair(query["time"], "time", _number)
        clauses.append("timestamp BETWEEN ? AND ?")
        params += [t0, t1]
    if not clauses:
        raise QueryError("query names no messages (give seq_id, seq_ids, seq_id_range, "
                         "msg_id, msg_ids or time)")
    where = "(" + " OR ".join(clauses) + ")"
    if "paged" in query and type(query["paged"]) is not bool:
        raise QueryError("paged must be true or false")
    if "after_seq_id" in query:
        where += " AND seq_id > ?"
        params.append(_int(query["after_seq_id"], "after_seq_id"))
    if "topics" in query:
        prefixes = _list(query["topics"], "topics", _str)
        topic_clauses = " OR ".join("substr(topic, 1, ?) = ?" for _ in prefixes)
        where += f" AND ({topic_clauses})"
        for p in prefixes:
            params += [len(p), p]
    return where, params


def _int(value: Any, name: str) -> int:
    if type(value) is not int:
        raise QueryError(f"{name} must be an integer")
    return value


def _uid(value: Any, name: str) -> bytes:
    try:
        return uid_of_msg_id(_str(value, name))
    except ValueError:
        raise QueryError(f"{name} must look like <year>-<uuid>") from None


def _number(value: Any, name: str) -> float:
    if type(value) not in (int, float):
        raise QueryError(f"{name} must hold numbers")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise QueryError(f"{name} must be a string")
    return value


def _list(value: Any, name: str, item) -> list[Any]:  # type: ignore[no-untyped-def]
    if not isinstance(value, list) or not value:
        raise QueryError(f"{name} must be a non-empty list")
    if len(value) > MAX_LIST:
        raise QueryError(f"{name} has more than {MAX_LIST} entries")
    return [item(v, name) for v in value]


def _pair(value: Any, name: str, item) -> tuple[Any, Any]:  # type: ignore[no-untyped-def]
    if not isinstance(value, list) or len(value) != 2:
        raise QueryError(f"{name} must be a [low, high] pair")
    lo, hi = item(value[0], name), item(value[1], name)
    if lo > hi:
        raise QueryError(f"{name} low end is above its high end")
    return lo, hi


def answer(store: Store, raw: bytes, max_messages: int,
           max_bytes: int = DEFAULT_MAX_BYTES) -> list[bytes]:
    """The reply frames for one request (never raises for a bad request).

    Rows are read one at a time and the reply stops at ``max_messages`` envelopes
    or ``max_bytes`` bytes of them, whichever comes first (at least one envelope),
    so no request makes the server hold more than that.
    """
    try:
        try:
            query = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise QueryError("request is not a JSON object") from None
        where, params = plan(query)
        paged = query.get("paged") is True
        frames: list[bytes] = []
        size = 0
        more = False
        last_sent = query.get("after_seq_id", 0)
        for seq_id, envelope in store.iter_envelopes(where, params, max_messages + 1):
            frame = envelope.encode()
            if len(frames) >= max_messages or (frames and size + len(frame) > max_bytes):
                more = True
                break
            frames.append(frame)
            size += len(frame)
            last_sent = seq_id
        if more and not paged:
            raise QueryError(f"query matches more than {max_messages} messages or "
                             f"{max_bytes} bytes; ask for a smaller range or send "
                             '"paged": true')
        if not paged:
            if not frames:
                raise QueryError(_pruned(store, query) or NO_MATCH)
            return frames
        factory = store.factory
        trailer = {TRAILER: {
            "more": more, "after_seq_id": last_sent, "last_seq_id": store.last_seq_id(),
            "publisher": factory.publisher if factory else None,
            "publisher_epoch": store.epoch(),
            # outbox retention removed seq_id <= this: such a request cannot be answered
            "pruned_seq_id": store.pruned_seq_id(),
        }}
        return [*frames, json.dumps(trailer, sort_keys=True).encode()]
    except QueryError as exc:
        return [f"error: '{exc}'".encode()]


def _pruned(store: Store, query: dict[str, Any]) -> str | None:
    """Why nothing matched, when it is outbox retention: the error text saying so."""
    pruned = store.pruned_seq_id()
    asked = [v for v in (query.get("seq_id"), *(query.get("seq_ids") or ()),
                         (query.get("seq_id_range") or [None])[0]) if v is not None]
    if pruned and asked and min(asked) <= pruned:
        return (f"seq_id up to {pruned} were pruned by outbox retention (asked from "
                f"{min(asked)}); "
                f"this publisher keeps seq_id {pruned + 1} and later")
    uids = [_uid(m, "msg_id") for m in (query.get("msg_id"), *(query.get("msg_ids") or ()))
            if m is not None]
    if pruned and store.pruned_uids(uids):
        return "msg_id pruned by outbox retention"
    return None


class ReplayServer:
    """ROUTER socket answering queries from the outbox, one at a time, forever."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str, store: Store,
                 max_messages: int, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_request_bytes: int = 65536, peer_limits: PeerLimits | None = None):
        self.store = store
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.answered = 0
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        # An oversize frame makes libzmq hang up before it allocates the frame.
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_request_bytes)
        self.socket.setsockopt(zmq.RCVHWM, 16)
        # A client that does not read its replies gets at most two queued; later ones drop.
        self.socket.setsockopt(zmq.SNDHWM, 2)
        self.guard = PeerGuard(self.socket, peer_limits or PeerLimits(max_bytes=1024 * 1024,
                                                                      max_peers=256), "replay")
        try:
            bind(self.socket, endpoint, "replay")
        except Exception:
            self.guard.close()
            self.socket.close(0)
            raise

    async def serve(self) -> None:
        while True:
            frames = await self.socket.recv_multipart()
            try:
                reply = await asyncio.to_thread(self._handle, frames)
            except Exception as exc:  # the server must keep running whatever happens
                log.exception("replay query failed")
                reply = _route(frames, [f"error: 'internal error: {exc}'".encode()])
            if reply is not None:
                try:
                    await self.socket.send_multipart(reply, flags=zmq.NOBLOCK)
                except zmq.ZMQError as exc:  # peer gone or not reading: its loss
                    log.debug("replay reply not sent: %s", exc)
            self.answered += 1

    def guard_peers(self) -> None:
        self.guard.check()

    def _handle(self, frames: list[bytes]) -> list[bytes] | None:
        """Split the routing envelope off, answer the one request frame, route the reply."""
        envelope, body = _split(frames)
        if not body or len(body) != 1:
            answer_frames = [b"error: 'a request is one frame of JSON'"]
        else:
            answer_frames = answer(self.store, body[0], self.max_messages, self.max_bytes)
        failed = len(answer_frames) == 1 and answer_frames[0].startswith(b"error: ")
        with self.store.transaction() as tx:
            tx.bump("replay.requests")
            if failed:
                tx.bump("replay.errors")
            else:
                tx.bump("replay.messages", sum(1 for f in answer_frames
                                               if not f.startswith(b'{"' + TRAILER.encode())))
        return [*envelope, *answer_frames]

    def close(self) -> None:
        self.guard.close()
        self.socket.close(0)


def _split(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """``[identity, ..., b"", body...]`` into the routing part (with the delimiter) and body.

    A DEALER that sent no delimiter gets its reply without one, which it can read.
    """
    identity, rest = frames[:1], frames[1:]
    if b"" in rest:
        cut = rest.index(b"") + 1
        return identity + rest[:cut], rest[cut:]
    return identity, rest


def _route(frames: list[bytes], reply: list[bytes]) -> list[bytes]:
    return [*_split(frames)[0], *reply]


class ReplayError(Exception):
    """The replay endpoint answered with an error or not at all."""


class ReplayTimeout(ReplayError):
    """The replay endpoint did not answer within the time given (loaded, restarting,
    unreachable): asking again may work, unlike an answer that is an error."""


def query(endpoint: str, request: dict[str, Any], *, timeout: float = 5.0,
          context: zmq.Context | None = None) -> list[dict[str, Any]]:
    """Ask a replay endpoint; return the envelopes (``[]`` when nothing matches).

    A plain fedmsg request: the server refuses one whose answer is over its limits;
    use :func:`pages` for any size.
    """
    frames = _ask(endpoint, request, timeout, context)
    if len(frames) == 1 and frames[0].startswith(b"error: "):
        text = frames[0][len(b"error: "):].decode(errors="replace").strip("'")
        if text == NO_MATCH:
            return []
        raise ReplayError(f"{endpoint}: {text}")
    return [_json(endpoint, f) for f in frames]


@dataclass(frozen=True)
class Page:
    envelopes: list[dict[str, Any]]
    more: bool
    after_seq_id: int
    last_seq_id: int
    publisher: str | None
    publisher_epoch: str | None
    #: seq_id <= this were pruned by the publisher's outbox retention (0: none).
    pruned_seq_id: int = 0


def pages(endpoint: str, request: dict[str, Any], *, timeout: float = 5.0,
          context: zmq.Context | None = None, max_pages: int | None = None) -> Iterator[Page]:
    """Ask page after page until the answer is complete (or ``max_pages`` were read)."""
    ask = {**request, "paged": True}
    count = 0
    while True:
        frames = _ask(endpoint, ask, timeout, context)
        if len(frames) == 1 and frames[0].startswith(b"error: "):
            text = frames[0][len(b"error: "):].decode(errors="replace").strip("'")
            raise ReplayError(f"{endpoint}: {text}")
        trailer = _json(endpoint, frames[-1]).get(TRAILER) if frames else None
        if not isinstance(trailer, dict):
            raise ReplayError(f"{endpoint} does not page its replies (no trailer frame)")
        page = Page(
            envelopes=[_json(endpoint, f) for f in frames[:-1]],
            more=trailer.get("more") is True,
            after_seq_id=_nonneg(trailer.get("after_seq_id")),
            last_seq_id=_nonneg(trailer.get("last_seq_id")),
            publisher=trailer.get("publisher") if isinstance(trailer.get("publisher"), str)
            else None,
            publisher_epoch=trailer.get("publisher_epoch")
            if isinstance(trailer.get("publisher_epoch"), str) else None,
            pruned_seq_id=_nonneg(trailer.get("pruned_seq_id")),
        )
        yield page
        count += 1
        previous = ask.get("after_seq_id", 0)
        if not page.more or page.after_seq_id <= previous or \
                (max_pages is not None and count >= max_pages):
            return
        ask["after_seq_id"] = page.after_seq_id


def _nonneg(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


#: Largest reply frame a client accepts (one envelope); a bigger one ends the answer.
MAX_REPLY_FRAME = 256 * 1024 * 1024


def _ask(endpoint: str, request: dict[str, Any], timeout: float,
         context: zmq.Context | None) -> Sequence[bytes]:
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_FRAME)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    try:
        sock.connect(endpoint)
        sock.send(json.dumps(request).encode())
        try:
            return sock.recv_multipart()
        except zmq.Again:
            raise ReplayTimeout(f"no answer from {endpoint} within {timeout:g} s") from None
    finally:
        sock.close(0)


def _json(endpoint: str, frame: bytes) -> dict[str, Any]:
    try:
        value = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ReplayError(f"{endpoint} sent a frame that is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ReplayError(f"{endpoint} sent a frame that is not a JSON object")
    return value
