"""The weekly overview on the web: ``/stats?week=2026-W48`` (HTML) and ``/v2/stats`` (JSON).

Kept out of :mod:`gateway.history.web` so ``busgate web`` gains the pages by one line
(:func:`stats_routes`). The page is plain server-rendered HTML with every name escaped
(package and user names come from hostile input), readable on a phone, its one inline
style allowed by hash in the Content-Security-Policy and nothing else loaded; names link
to the dashboard's ``/package/NAME`` and ``/user/NAME`` pages.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.history import stats
from gateway.history.store import QueryTimeout

if TYPE_CHECKING:
    from gateway.history.store import HistoryStore
    from gateway.messages import TypeIndex

#: Parameters the stats endpoints take.
PARAMETERS = ("week", "top")

_STYLE = """
body{font:16px/1.4 system-ui,sans-serif;margin:0 auto;max-width:48rem;padding:.5rem 1rem;
color:#222;background:#fff}
a{color:#0645ad}h1{font-size:1.4rem;margin:.5rem 0 0}h2{font-size:1.1rem;margin:1.2rem 0 .3rem}
.when{color:#555;margin:.2rem 0 .8rem}nav{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}
table{border-collapse:collapse;width:100%}th,td{padding:.3rem .4rem;border-bottom:1px solid #ddd}
th{text-align:left;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td:first-child{white-space:nowrap}tr.detail td:first-child{padding-left:1.4rem;color:#555}
.up{color:#1a7f37}.down{color:#b3261e}
ol{padding-left:1.8rem;margin:.2rem 0}li span{color:#555}
.lists{display:grid;grid-template-columns:repeat(auto-fit,minmax(14rem,1fr));gap:0 1.5rem}
"""
_CSP = ("default-src 'none'; style-src 'sha256-"
        + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
        + "'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"}


class BadParameter(ValueError):
    def __init__(self, parameter: str, reason: str):
        super().__init__(reason)
        self.parameter = parameter
        self.reason = reason


def _parse(request: Request) -> tuple[stats.Week, int]:
    params = request.query_params
    for name in params:
        if name not in PARAMETERS:
            raise BadParameter(name, f"unknown parameter (valid: {', '.join(PARAMETERS)})")
        if len(params.getlist(name)) > 1:
            raise BadParameter(name, "given more than once")
    try:
        week = stats.parse_week(params["week"]) if params.get("week") \
            else stats.last_complete_week()
    except stats.BadWeek as exc:
        raise BadParameter("week", str(exc)) from None
    text = params.get("top", "")
    if not text:
        return week, stats.DEFAULT_TOP
    if not (text.isascii() and text.isdigit() and len(text) <= 3) \
            or not 1 <= int(text) <= stats.MAX_TOP:
        raise BadParameter("top", f"must be a whole number 1..{stats.MAX_TOP}")
    return week, int(text)


def stats_routes(store: HistoryStore, index: TypeIndex | None = None) -> list[Route]:
    """``/stats`` and ``/v2/stats`` over ``store`` (``index``: the deployment's message
    types, so topics are counted by their types' own tokens)."""
    from gateway.history.web import answer, bad  # here: web.py imports this module

    def as_json(request: Request) -> Response:
        try:
            week, top = _parse(request)
        except BadParameter as exc:
            return bad(exc.parameter, exc.reason)
        try:
            found = stats.overview(store, week, index=index, top=top)
        except QueryTimeout as exc:
            return answer({"error": "timeout", "detail": str(exc)}, 503)
        return answer(found.as_json())

    def as_html(request: Request) -> Response:
        try:
            week, top = _parse(request)
        except BadParameter as exc:
            return _page("Bad request", f"<p>{_e(exc.parameter)}: {_e(exc.reason)}</p>"
                         f'<p><a href="/stats">The last complete week</a></p>', 400)
        try:
            found = stats.overview(store, week, index=index, top=top)
        except QueryTimeout as exc:
            return _page("Try again later", f"<p>{_e(str(exc))}</p>", 503)
        return _page(f"Week {week}", render(found, top))

    return [Route("/stats", as_html, methods=["GET"]),
            Route("/v2/stats", as_json, methods=["GET"])]


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: str, status: int = 200) -> Response:
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>busgate · {_e(title)}</title><style>{_STYLE}</style></head><body>"
        f'<p><a href="/">busgate</a> · weekly overview</p>{body}</body></html>',
        status, headers=_HEADERS)


def _change(count: stats.Count) -> str:
    if not count.change:
        return '<td class="n">0</td>'
    css = "up" if count.change > 0 else "down"
    return f'<td class="n {css}">{count.change:+d}</td>'


def _row(label: str, count: stats.Count, css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    return (f"<tr{klass}><td>{_e(label)}</td><td class=\"n\">{count.count}</td>"
            f'<td class="n">{count.previous}</td>{_change(count)}</tr>')


def _names(title: str, path: str, names: list[tuple[str, int]]) -> str:
    items = "".join(f'<li><a href="/{path}/{quote(name, safe="")}">{_e(name)}</a> '
                    f"<span>{count}</span></li>" for name, count in names)
    return f"<section><h2>{_e(title)}</h2>" + (f"<ol>{items}</ol>" if items
                                               else "<p>None this week.</p>") + "</section>"


def render(found: stats.Overview, top: int = stats.DEFAULT_TOP) -> str:
    """The page body of one overview."""
    week = found.week
    last_day = week.end.date() - dt.timedelta(days=1)
    keep = "" if top == stats.DEFAULT_TOP else f"&amp;top={top}"
    links = [f'<a href="/stats?week={week.previous()}{keep}">← {week.previous()}</a>']
    if found.complete:
        links.append(f'<a href="/stats?week={week.following()}{keep}">{week.following()} →</a>')
    rows = []
    for kind in found.kinds:
        rows.append(_row(stats.kind_label(kind.name), kind))
        if len(kind.details) > 1:
            rows += [_row(name, count, "detail") for name, count in kind.details.items()]
    rows.append(_row("all messages", found.messages))
    return (
        f"<h1>Week {week}</h1>"
        f'<p class="when">{week.start.date()} to {last_day} (UTC)'
        + ("" if found.complete else ", not over yet") + "</p>"
        f"<nav>{links[0]}"
        '<form method="get" action="/stats"><input type="week" name="week" '
        f'value="{week}" aria-label="week"> <button>Show</button></form>'
        + "".join(links[1:]) + "</nav>"
        '<table><thead><tr><th></th><th class="n">this week</th><th class="n">last week</th>'
        f'<th class="n">change</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
        '<div class="lists">'
        + _names("Most active packages", "package", found.packages)
        + _names("Most active people", "user", found.users)
        + f'</div><p><a href="/v2/stats?week={week}{keep}">As JSON</a></p>')
