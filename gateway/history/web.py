"""``busgate web``: the history over HTTP, datagrepper-compatible (Starlette on uvicorn).

Why Starlette and uvicorn: both are widely used and actively kept, small (no ORM, no
template engine forced on us), ASGI, so the live dashboard to come can stream
messages (SSE/WebSocket) from the same app, and the plain endpoints here are sync
functions Starlette runs in its thread pool next to the SQLite reads.

Routes: ``/raw`` and ``/v2/search``, ``/id`` and ``/v2/id``, ``/messagecount``,
``/healthz`` (with datagrepper's ``/healthz/live`` and ``/healthz/ready``); the live
dashboard (``/``, ``/package/NAME``, ``/user/NAME``: gateway.history.dashboard) and
its stream ``/v2/stream`` (gateway.history.stream). The JSON endpoints allow any
origin (CORS, as datagrepper does for GET); the HTML pages do not. The JSON
shapes are datagrepper's (``/raw``: datanommer's ``as_dict``; ``/v2/*``: the
fedora-messaging message dict ``fedora-messaging replay`` loads); an answer is always
``application/json`` (``application/javascript`` for JSONP ``callback``), whatever the
request's ``Accept``; every bad parameter is a 400 ``{"error", "parameter",
"detail"}``; a query past ``history.query_timeout`` is a 503.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway import __version__, messages
from gateway.history import dashboard, jsonio
from gateway.history import query as q
from gateway.history import stream as live
from gateway.history.statspage import stats_routes
from gateway.history.store import HistoryError, HistoryStore, Position, QueryTimeout, Stored
from gateway.messages import TypeIndex

if TYPE_CHECKING:
    from gateway.config import HistorySettings

JSON = "application/json"
JSONP = "application/javascript"


_dumps, _loads = jsonio.dumps, jsonio.loads


def answer(value: Any, status: int = 200, callback: str | None = None) -> Response:
    if callback:
        body = f"/**/{callback}(".encode() + _dumps(value) + b");"
        return Response(body, status, media_type=JSONP)
    return Response(_dumps(value), status, media_type=JSON)


def bad(parameter: str, detail: str) -> Response:
    return answer({"error": "bad_request", "parameter": parameter, "detail": detail}, 400)


def _headers(envelope: dict[str, Any]) -> dict[str, Any]:
    head = envelope.get("headers")
    head = dict(head) if isinstance(head, dict) else {}
    if messages.SENT_AT_HEADER not in head and isinstance(envelope.get("timestamp"), int):
        head[messages.SENT_AT_HEADER] = messages.sent_at(envelope["timestamp"])
    return head


def as_dict(row: Stored, envelope: dict[str, Any]) -> dict[str, Any]:
    """datanommer's ``Message.as_dict()`` shape (``/raw``, ``/id``)."""
    crypto = envelope.get("crypto") or ("x509" if envelope.get("certificate") else None)
    return {"i": envelope.get("i", 0), "msg_id": row.msg_id, "topic": envelope.get("topic"),
            "timestamp": row.timestamp, "certificate": envelope.get("certificate"),
            "signature": envelope.get("signature"), "crypto": crypto,
            "agent_name": None, "username": envelope.get("username"),
            "msg": envelope.get("msg"), "headers": _headers(envelope),
            "source_name": "busgate", "source_version": __version__,
            "users": list(row.users), "packages": list(row.packages)}


def as_fedora_message(row: Stored, envelope: dict[str, Any]) -> dict[str, Any]:
    """The fedora-messaging serialised message (``/v2/search``, ``/v2/id``)."""
    head = _headers(envelope)
    priority = head.get("priority", 0)
    return {"body": envelope.get("msg"), "headers": head, "id": row.msg_id,
            "priority": priority if type(priority) is int else 0, "queue": None,
            "topic": envelope.get("topic")}


class ApiCors:
    """Any origin may GET the JSON API (datagrepper's CORS, preflights included); the HTML
    pages get no CORS headers. Per path here rather than per route: Debian 12's
    starlette (0.26) has no route middleware."""

    def __init__(self, app: Any, paths: frozenset[str]):
        self.app = app
        self.paths = paths
        self.cors = CORSMiddleware(app, allow_origins=["*"], allow_methods=["GET"],
                                   allow_headers=["*"])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        api = scope["type"] == "http" and scope["path"] in self.paths
        await (self.cors if api else self.app)(scope, receive, send)


class HistoryApp:
    """The Starlette application over one :class:`HistoryStore`."""

    def __init__(self, store: HistoryStore, index: TypeIndex | None = None, *,
                 max_page: int = 100, max_values: int = 50, max_streams: int = 100,
                 stream_queue: int = 256, poll: float = 0.5, keepalive: float = 15.0,
                 resume: int = 1000, stall: float = 1.0, chart_refresh: float = 60.0):
        self.store = store
        self.index = index if index is not None else TypeIndex(())
        self.max_page = max_page
        self.max_values = max_values
        self.streams = live.Broadcaster(
            store, lambda row: dashboard.event_of(dashboard.line_of(row, self.index)),
            max_streams=max_streams, queue_size=stream_queue, poll=poll, keepalive=keepalive,
            resume=resume, stall=stall)
        self.dashboard = dashboard.Dashboard(store, self.index, max_values=max_values,
                                             chart_refresh=chart_refresh)
        api_paths = ("/raw", "/raw/", "/v2/search", "/v2/search/", "/id", "/id/", "/v2/id",
                     "/v2/id/", "/messagecount", "/healthz", "/healthz/live",
                     "/healthz/ready")

        def api(path: str, endpoint: Any) -> Route:
            return Route(path, endpoint, methods=["GET", "OPTIONS"])

        routes = [api(path, self.search)
                  for path in ("/raw", "/raw/", "/v2/search", "/v2/search/")]
        routes += [api(path, self.by_id) for path in ("/id", "/id/", "/v2/id", "/v2/id/")]
        routes += [api("/messagecount", self.messagecount), api("/healthz", self.health),
                   api("/healthz/live", self.live), api("/healthz/ready", self.health),
                   Route("/v2/stream", self.stream, methods=["GET"]),
                   *self.dashboard.routes(),
                   Mount("/static", StaticFiles(packages=[("gateway.history", "static")]))]
        routes += stats_routes(store, self.index)
        self.app = Starlette(routes=routes, lifespan=self.lifespan,
                             middleware=[Middleware(ApiCors, paths=frozenset(api_paths))],
                             exception_handlers={404: self.not_found, 405: self.not_allowed})
        #: The live streams: a server ends them first when it shuts down
        #: (``await app.state.streams.stop()``), else it waits for them to time out.
        self.app.state.streams = self.streams

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await self.streams.stop()

    # -- rendering -------------------------------------------------------------------------
    def _shape(self, row: Stored, v2: bool, meta: tuple[str, ...]) -> dict[str, Any]:
        envelope = _loads(row.envelope)
        out = as_fedora_message(row, envelope) if v2 else as_dict(row, envelope)
        if meta:
            out["meta"] = self._meta(row, envelope, meta)
        return out

    def _meta(self, row: Stored, envelope: dict[str, Any],
              wanted: tuple[str, ...]) -> dict[str, Any]:
        from gateway import display

        description = display.describe(envelope, self.index)
        known = {"summary": description.summary, "text": description.summary,
                 "url": description.url, "app_icon": None, "agent_avatar": None,
                 "usernames": list(row.users), "packages": list(row.packages),
                 "containers": [], "modules": [], "flatpaks": [],
                 "date": dt.datetime.fromtimestamp(row.timestamp, dt.UTC).isoformat()}
        return {name: known[name] for name in wanted}

    # -- endpoints ---------------------------------------------------------------------------
    def search(self, request: Request) -> Response:
        callback = _callback(request)
        try:
            query = q.parse(request.query_params.multi_items(), max_page=self.max_page,
                            max_values=self.max_values)
        except q.BadParameter as exc:
            return bad(exc.parameter, exc.reason)
        try:
            page = self.store.search(query)
        except QueryTimeout as exc:
            return answer({"error": "timeout", "detail": str(exc),
                           "arguments": query.arguments()}, 503, callback)
        v2 = request.url.path.startswith("/v2/")
        rows = [self._shape(row, v2, query.meta) for row in page.rows]
        more = page.more if page.more is not None else len(page.rows) == query.rows_per_page \
            and (query.cursor is not None or page.capped
                 or (query.page - 1) * query.rows_per_page + len(page.rows) < page.total)
        last = page.rows[-1] if page.rows else None
        return answer({
            # total: exact, or (total_capped) at least this many: history.count_limit,
            # and history.count_budget_ms (then pages is one past a page that has a next)
            "raw_messages": rows, "total": page.total, "total_capped": page.capped,
            "pages": math.ceil(page.total / query.rows_per_page),
            "count": len(rows), "arguments": query.arguments(),
            "cursor": q.encode_cursor(query.order, last.timestamp, last.id)
            if more and last is not None else None,
        }, callback=query.callback)

    def by_id(self, request: Request) -> Response:
        callback = _callback(request)
        params = request.query_params
        for name in params:
            if name not in ("id", "is_raw", "size", "chrome", "callback", "_"):
                return bad(name, "unknown parameter (valid: id, is_raw, size, chrome, "
                                 "callback)")
            if len(params.getlist(name)) > 1:
                return bad(name, "given more than once")
        msg_id = params.get("id")
        if not msg_id:
            return bad("id", "required: the msg_id of the message")
        if len(msg_id) > q.MAX_VALUE_CHARS:
            return bad("id", f"longer than {q.MAX_VALUE_CHARS} characters")
        size = params.get("size", "large")
        if size not in q.SIZES:
            return bad("size", f"must be one of {', '.join(q.SIZES)}, not {size!r}")
        for name in ("is_raw", "chrome"):
            try:
                q._bool(dict(params), name, True)
            except q.BadParameter as exc:
                return bad(exc.parameter, exc.reason)
        if callback is not None and not q.CALLBACK.fullmatch(callback):
            return bad("callback", "must be a JavaScript name (letters, digits, _ $ .)")
        try:
            row = self.store.get(msg_id)
        except QueryTimeout as exc:
            return answer({"error": "timeout", "detail": str(exc)}, 503, callback)
        if row is None:
            return answer({"error": "not_found"}, 404, callback)
        return answer(self._shape(row, request.url.path.startswith("/v2/"), ()),
                      callback=callback)

    def messagecount(self, request: Request) -> Response:
        if request.query_params:
            return bad(next(iter(request.query_params)), "unknown parameter (none taken)")
        try:
            return answer({"messagecount": self.store.count()})
        except QueryTimeout as exc:
            return answer({"error": "timeout", "detail": str(exc)}, 503)

    async def stream(self, request: Request) -> Response:
        """``/v2/stream``: new messages matching ``/raw``'s filters, as Server-Sent Events
        (``after`` or the ``Last-Event-ID`` header: resume after that id)."""
        try:
            query = live.parse_filter(request.query_params.multi_items(),
                                      max_values=self.max_values, extra=("after",))
            after = _after(request)
        except q.BadParameter as exc:
            return bad(exc.parameter, exc.reason)
        try:
            client, backlog, gap = await self.streams.open(query, after)
        except live.StreamsFull as exc:
            return answer({"error": "too_many_streams", "detail": str(exc)}, 503)
        except HistoryError as exc:
            return answer({"error": "unavailable", "detail": str(exc)}, 503)
        return StreamingResponse(self.streams.frames(client, backlog, gap),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    def live(self, request: Request) -> Response:
        return answer({"status": "ok"})

    def health(self, request: Request) -> Response:
        try:
            count, behind = self.store.count(), self.store.index_lag()
        except HistoryError as exc:
            return answer({"status": "unavailable", "detail": str(exc)}, 503)
        # behind: messages a contains search does not find yet (SQLite's text index
        # fills behind the recorder: normally one batch, more during a rebuild)
        return answer({"status": "ok", "messages": count, "index_behind": behind})

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return answer({"error": "not_found", "path": request.url.path}, 404)

    async def not_allowed(self, request: Request, exc: Exception) -> Response:
        return answer({"error": "method_not_allowed", "method": request.method}, 405)


def _callback(request: Request) -> str | None:
    """A valid JSONP callback of the request, for its error answers too (else None)."""
    value = request.query_params.get("callback")
    return value if value and q.CALLBACK.fullmatch(value) else None


def _after(request: Request) -> Position | int | None:
    """Where a stream resumes: the browser's ``Last-Event-ID`` on a reconnection, else
    the page's ``after`` (the feed's position when it was drawn), else now. Either is a
    position (an event's id) or a plain message id (as sent before positions)."""
    for name, text in (("Last-Event-ID", request.headers.get("last-event-id")),
                       ("after", request.query_params.get("after"))):
        if text is not None:
            try:
                return Position.parse(text)
            except ValueError:
                raise q.BadParameter(name, "must be an event id of this stream (or a "
                                           f"message id), not {text[:32]!r}") from None
    return None


def limits(conf: HistorySettings) -> dict[str, float]:
    """The ``[history]`` keys that bound ``busgate web``, as :func:`make_app` takes them."""
    return {"max_page": conf.max_page, "max_values": conf.max_values,
            "max_streams": conf.max_streams, "stream_queue": conf.stream_queue,
            "stall": conf.stream_stall, "keepalive": conf.stream_keepalive,
            "resume": conf.stream_resume, "chart_refresh": conf.chart_refresh}


def make_app(store: HistoryStore, index: TypeIndex | None = None,
             **limits: float) -> Starlette:
    return HistoryApp(store, index, **limits).app  # type: ignore[arg-type]

