"""Replay: answer fedmsg-style queries for missed messages from the outbox.

Protocol (fedmsg's, with its defects fixed): the client sends one JSON frame
with any of ``seq_id``, ``seq_ids``, ``seq_id_range`` ([lo, hi], inclusive),
``msg_id``, ``msg_ids``, ``time`` ([t0, t1], epoch seconds), ORed together, and
optionally ``topics`` (busgate extension: topic prefixes to keep). The reply is
one frame per matching envelope, in seq_id order, every match included; or a
single frame ``error: '<text>'``. A query that matches nothing is answered
``error: 'no messages match'`` as in fedmsg; :func:`query` turns it into ``[]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

import zmq
import zmq.asyncio

from gateway.envelope import uid_of_msg_id
from gateway.store import Store
from gateway.transports.zmq import bind

log = logging.getLogger(__name__)

NO_MATCH = "no messages match"
KNOWN_KEYS = ("seq_id", "seq_ids", "seq_id_range", "msg_id", "msg_ids", "time", "topics")
MAX_LIST = 10000


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
        clauses.append("uid = ?")
        params.append(_uid(query["msg_id"], "msg_id"))
    if "msg_ids" in query:
        ids = _list(query["msg_ids"], "msg_ids", _uid)
        clauses.append(f"uid IN ({','.join('?' * len(ids))})")
        params += ids
    if "time" in query:
        t0, t1 = _pair(query["time"], "time", _number)
        clauses.append("timestamp BETWEEN ? AND ?")
        params += [t0, t1]
    if not clauses:
        raise QueryError("query names no messages (give seq_id, seq_ids, seq_id_range, "
                         "msg_id, msg_ids or time)")
    where = "(" + " OR ".join(clauses) + ")"
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


def answer(store: Store, raw: bytes, max_messages: int) -> list[bytes]:
    """The reply frames for one request (never raises for a bad request)."""
    try:
        try:
            query = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise QueryError("request is not a JSON object") from None
        where, params = plan(query)
        rows = store.envelopes(where, params, max_messages + 1)
        if len(rows) > max_messages:
            raise QueryError(f"query matches more than {max_messages} messages; "
                             "ask for a smaller range")
        if not rows:
            raise QueryError(NO_MATCH)
        return [r.encode() for r in rows]
    except QueryError as exc:
        return [f"error: '{exc}'".encode()]


class ReplayServer:
    """REP socket answering queries from the outbox, one at a time, forever."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str, store: Store,
                 max_messages: int):
        self.store = store
        self.max_messages = max_messages
        self.answered = 0
        self.socket = context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        try:
            bind(self.socket, endpoint, "replay")
        except Exception:
            self.socket.close(0)
            raise

    async def serve(self) -> None:
        while True:
            request = await self.socket.recv()
            try:
                frames = await asyncio.to_thread(self._answer, request)
            except Exception as exc:  # the server must keep running whatever happens
                log.exception("replay query failed")
                frames = [f"error: 'internal error: {exc}'".encode()]
            await self.socket.send_multipart(frames)
            self.answered += 1

    def _answer(self, request: bytes) -> list[bytes]:
        frames = answer(self.store, request, self.max_messages)
        failed = len(frames) == 1 and frames[0].startswith(b"error: ")
        with self.store.transaction() as tx:
            tx.bump("replay.requests")
            if failed:
                tx.bump("replay.errors")
            else:
                tx.bump("replay.messages", len(frames))
        return frames

    def close(self) -> None:
        self.socket.close(0)


class ReplayError(Exception):
    """The replay endpoint answered with an error or not at all."""


def query(endpoint: str, request: dict[str, Any], *, timeout: float = 5.0,
          context: zmq.Context | None = None) -> list[dict[str, Any]]:
    """Ask a replay endpoint; return the envelopes (``[]`` when nothing matches)."""
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    try:
        sock.connect(endpoint)
        sock.send(json.dumps(request).encode())
        try:
            frames: Sequence[bytes] = sock.recv_multipart()
        except zmq.Again:
            raise ReplayError(f"no answer from {endpoint} within {timeout:g} s") from None
    finally:
        sock.close(0)
    if len(frames) == 1 and frames[0].startswith(b"error: "):
        text = frames[0][len(b"error: "):].decode(errors="replace").strip("'")
        if text == NO_MATCH:
            return []
        raise ReplayError(f"{endpoint}: {text}")
    try:
        return [json.loads(f) for f in frames]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReplayError(f"{endpoint} sent a frame that is not JSON: {exc}") from None
