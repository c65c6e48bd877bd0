"""The live dashboard of ``busgate web``: plain server-rendered HTML pages.

``/``: the newest messages (one line each: time, service, the type's summary and
link), the filter form (its GET query string is the shareable URL and the live
stream's filter), the per-service activity of the last day and week as inline SVG,
and a small script that adds new messages from ``/v2/stream`` as they arrive and counts
each in the charts' current bar (a message already on the page's stream costs no request);
every ``history.chart_refresh`` seconds it re-reads the charts (``/v2/activity``), which
moves them on at the turn of the hour and corrects a filtered page (its stream does not
carry every message the charts count).
``/package/NAME`` and ``/user/NAME``: that name's month, paged with the cursor.

Why Jinja2 with autoescape: summaries, names and topics come from hostile input and
every one is escaped by default; a template is easier to read and review than HTML
built in Python. Every page sends a Content-Security-Policy that allows only this
server's own script and style, so even a missed escape could run nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.history import jsonio
from gateway.history import query as q
from gateway.history.store import HistoryStore, QueryTimeout, Stored
from gateway.history.stream import FILTERS, Event, parse_filter
from gateway.messages import TypeIndex

log = logging.getLogger(__name__)

#: Lines on ``/`` (and kept by its script as new ones arrive).
RECENT = 25
#: Lines per page of ``/package/NAME`` and ``/user/NAME``.
NAME_PAGE = 50
#: Colour classes of services (CSS ``.s0``..``.s7``), picked by a stable hash of the name.
PALETTE = 8
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HTML_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin"}
DAY, WEEK = 86400, 7 * 86400


@dataclass(frozen=True)
class Line:
    """One message as the dashboard shows it."""

    id: int
    msg_id: str
    when: str
    iso: str
    service: str
    colour: int
    topic: str
    summary: str
    #: The type's link, only when it is http(s) (a body could say ``javascript:``).
    url: str | None
    users: tuple[str, ...]
    packages: tuple[str, ...]


def colour(service: str) -> int:
    return zlib.crc32(service.encode()) % PALETTE


def line_of(row: Stored, index: TypeIndex) -> Line:
    from gateway import display
    from gateway.history.records import category

    envelope = jsonio.loads(row.envelope)
    description = display.describe(envelope, index)
    url = description.url
    if url is not None and not url.lower().startswith(("https://", "http://")):
        url = None
    topic = str(envelope.get("topic", ""))
    service = category(topic)
    stamp = dt.datetime.fromtimestamp(row.timestamp, dt.UTC)
    return Line(row.id, row.msg_id, stamp.strftime("%Y-%m-%d %H:%M:%S"), stamp.isoformat(),
                service, colour(service), topic, description.summary, url, row.users,
                row.packages)


def event_of(line: Line) -> Event:
    data = jsonio.dumps({"id": line.id, "msg_id": line.msg_id, "when": line.when,
                         "iso": line.iso, "service": line.service, "colour": line.colour,
                         "topic": line.topic, "summary": line.summary, "url": line.url,
                         "users": line.users, "packages": line.packages}).decode()
    return Event(line.id, line.service, line.topic, frozenset(line.users),
                 frozenset(line.packages), data)


@dataclass(frozen=True)
class Chart:
    """A stacked bar chart of messages per service, as SVG shapes."""

    title: str
    width: int
    height: int
    bars: list[dict[str, Any]]
    ticks: list[dict[str, Any]]
    legend: list[tuple[str, int, int]]
    top: int
    total: int
    #: What the page's script redraws the chart from (:func:`live_data`), or None.
    live: dict[str, Any] | None = None


def chart(title: str, series: dict[str, list[int]], start: float, bucket: int,
          tick_every: int, tick_format: str, slots: int = 0) -> Chart:
    """Lay out ``series`` (per service, per bucket from ``start``) as stacked bars
    (``slots`` bars, default: as many as the longest series has)."""
    width, height, pad = 720, 150, 22
    slots = slots or max((len(v) for v in series.values()), default=0) or 1
    sums = [sum(v[i] for v in series.values() if i < len(v)) for i in range(slots)]
    top = max(sums, default=0) or 1
    step = (width - 2) / slots
    order = sorted(series, key=lambda s: (-sum(series[s]), s))
    bars: list[dict[str, Any]] = []
    for i in range(slots):
        y = float(height - pad)
        at = dt.datetime.fromtimestamp(start + i * bucket, dt.UTC)
        for service in order:
            n = series[service][i] if i < len(series[service]) else 0
            if not n:
                continue
            h = n / top * (height - pad - 4)
            y -= h
            bars.append({"x": round(1 + i * step, 2), "y": round(y, 2),
                         "w": round(max(step - 1, 0.5), 2), "h": round(h, 2),
                         "colour": colour(service),
                         "label": f"{at:%Y-%m-%d %H:%M} {service}: {n}"})
    ticks = []
    for i in range(0, slots, tick_every):
        at = dt.datetime.fromtimestamp(start + i * bucket, dt.UTC)
        ticks.append({"x": round(1 + i * step, 2), "label": at.strftime(tick_format)})
    legend = [(s, colour(s), sum(series[s])) for s in order]
    return Chart(title, width, height, bars, ticks, legend, top, sum(sums))


def live_data(drawn: Chart, series: dict[str, list[int]], start: float, bucket: int,
              slots: int) -> dict[str, Any]:
    """A chart as the page's script lays it out again when it counts a live message
    (``dashboard.js`` draws as :func:`chart` does): the per-service counts, where the
    first bar starts, and each service's colour class; the ticks as drawn."""
    return {"start": start, "bucket": bucket, "slots": slots,
            "series": {name: counts + [0] * (slots - len(counts))
                       for name, counts in series.items()},
            "colours": {name: colour(name) for name in series}, "ticks": drawn.ticks}


def _hour(now: float) -> float:
    return math.floor(now / 3600) * 3600


def _month(text: str | None, now: float) -> tuple[float, float, str]:
    """[start, end) of ``YYYY-MM`` (default: this month, UTC), and its label."""
    if text is None:
        first = dt.datetime.fromtimestamp(now, dt.UTC).replace(day=1, hour=0, minute=0,
                                                              second=0, microsecond=0)
    else:
        try:
            first = dt.datetime.strptime(text, "%Y-%m").replace(tzinfo=dt.UTC)
        except ValueError:
            raise q.BadParameter("month", f"must be YYYY-MM, not {text[:32]!r}") from None
    after = (first + dt.timedelta(days=32)).replace(day=1)
    return first.timestamp(), after.timestamp(), first.strftime("%Y-%m")


class Dashboard:
    """The HTML routes over one store."""

    def __init__(self, store: HistoryStore, index: TypeIndex, *, max_values: int = 50,
                 clock: Callable[[], float] = time.time, chart_refresh: float = 60.0):
        self.store = store
        self.index = index
        self.max_values = max_values
        self.clock = clock
        self.chart_refresh = chart_refresh
        self.env = Environment(loader=PackageLoader("gateway.history", "templates"),
                               autoescape=select_autoescape(default=True),
                               trim_blocks=True, lstrip_blocks=True)

    def routes(self) -> list[Route]:
        return [Route("/", self.index_page, methods=["GET"]),
                Route("/v2/activity", self.activity, methods=["GET"]),
                Route("/package/{name}", self.name_page, methods=["GET"]),
                Route("/user/{name}", self.name_page, methods=["GET"])]

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        body = self.env.get_template(template).render(**context)
        return HTMLResponse(body, status, headers=HTML_HEADERS)

    def error(self, status: int, title: str, detail: str) -> Response:
        return self.render("error.html", status, title=title, detail=detail)

    def lines(self, rows: list[Stored]) -> list[Line]:
        """The rows as lines; a damaged row is left out (logged), not a failed page."""
        out = []
        for row in rows:
            try:
                out.append(line_of(row, self.index))
            except Exception as exc:
                log.warning("history web: message %s cannot be shown: %s", row.msg_id, exc)
        return out

    def index_page(self, request: Request) -> Response:
        try:
            query = parse_filter(request.query_params.multi_items(),
                                 max_values=self.max_values)
        except q.BadParameter as exc:
            return self.error(400, "Bad filter", f"{exc.parameter}: {exc.reason}")
        filters = [(name, value) for name, value in request.query_params.multi_items()
                   if name in FILTERS and value.strip()]
        try:
            # the stream's start first: a message stored in between is sent twice at
            # worst (the script keeps each id once), never missed
            after = self.store.last_position()
            rows = self.store.recent(q.Query(**{**_filter_fields(query),
                                                "rows_per_page": RECENT}))
            charts = self.charts()
        except QueryTimeout as exc:
            return self.error(503, "The history is busy", str(exc))
        stream = "/v2/stream?" + urlencode([*filters, ("after", after.token())])
        form = {name: next((v for n, v in filters if n == name), "") for name in FILTERS}
        return self.render("index.html", lines=self.lines(rows), charts=charts,
                           stream=stream, form=form, filtered=bool(filters),
                           filters=filters, recent=RECENT,
                           refresh=round(self.chart_refresh * 1000))

    def charts(self) -> list[Chart]:
        """The last day's and week's activity per service, up to this hour's end."""
        hour = _hour(self.clock()) + 3600
        out = []
        for title, span, bucket, every, fmt in (
                ("Last 24 hours, per hour", DAY, 3600, 6, "%H:00"),
                ("Last 7 days, per 6 hours", WEEK, 6 * 3600, 4, "%a %d")):
            series = self.store.activity(hour - span, hour, bucket)
            drawn = chart(title, series, hour - span, bucket, every, fmt, span // bucket)
            out.append(replace(drawn, live=live_data(drawn, series, hour - span, bucket,
                                                     span // bucket)))
        return out

    def activity(self, request: Request) -> Response:
        """``/v2/activity``: the charts of ``/`` as the page's script redraws them, and the
        feed's position they count through (``position``: a live message at or before it
        is in them already; read first, so a message stored meanwhile may count twice
        until the next re-read, never be missed)."""
        try:
            position = self.store.last_position()
            charts = self.charts()
        except QueryTimeout as exc:
            return Response(jsonio.dumps({"error": "timeout", "detail": str(exc)}), 503,
                            media_type="application/json")
        return Response(jsonio.dumps({"position": position.token(),
                                      "charts": [c.live for c in charts]}),
                        media_type="application/json", headers={"Cache-Control": "no-store"})

    def name_page(self, request: Request) -> Response:
        kind = "package" if request.url.path.startswith("/package/") else "user"
        name = request.path_params["name"]
        params = request.query_params
        for key in params:
            if key not in ("month", "cursor"):
                return self.error(400, "Bad parameter", f"{key}: unknown parameter "
                                                        "(valid: month, cursor)")
        try:
            start, end, month = _month(params.get("month"), self.clock())
            query = q.parse([(kind, name), ("start", repr(start)),
                             ("end", repr(end - 0.001)),
                             ("rows_per_page", str(NAME_PAGE)),
                             *([("cursor", params["cursor"])] if "cursor" in params else [])],
                            max_values=self.max_values)
        except q.BadParameter as exc:
            return self.error(400, "Bad parameter", f"{exc.parameter}: {exc.reason}")
        try:
            page = self.store.search(query)
            days = self.store.name_activity(kind + "s", name, start, end, DAY)
        except QueryTimeout as exc:
            return self.error(503, "The history is busy", str(exc))
        older = None
        if len(page.rows) == NAME_PAGE:
            last = page.rows[-1]
            older = "?" + urlencode({"month": month, "cursor": q.encode_cursor(
                query.order, last.timestamp, last.id)})
        first = dt.datetime.fromtimestamp(start, dt.UTC)
        previous = (first - dt.timedelta(days=1)).strftime("%Y-%m")
        following = dt.datetime.fromtimestamp(end, dt.UTC).strftime("%Y-%m")
        graph = chart(f"{month}, per day", days, start, DAY, 7, "%d %b") if days else None
        return self.render("name.html", kind=kind, name=name, month=month, chart=graph,
                           lines=self.lines(page.rows),
                           total=page.total, capped=page.capped, older=older, previous=previous,
                           following=following if end <= self.clock() else None,
                           continued="cursor" in params,
                           live="/?" + urlencode({kind: name}))


def _filter_fields(query: q.Query) -> dict[str, Any]:
    return {"users": query.users, "packages": query.packages,
            "categories": query.categories, "topics": query.topics,
            "not_users": query.not_users, "not_packages": query.not_packages,
            "not_categories": query.not_categories, "not_topics": query.not_topics}
