"""``busgate stats``: the weekly overview of the history, as a table or as JSON."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.history.stats import Count, Overview

HELP = ("the weekly overview: uploads, bugs opened and closed, builds, pushes, the most "
        "active packages and people (from the history, read-only)")

EX_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--week", nargs="?", const="", default="", metavar="WEEK",
                        help="ISO week, e.g. 2026-W48 (UTC; default: the last complete week)")
    parser.add_argument("--json", action="store_true", help="one JSON object, for machines")
    parser.add_argument("--top", type=int, default=None, metavar="N",
                        help="length of the top lists (default 10, at most 100)")
    parser.add_argument("--database", metavar="PATH|URL",
                        help="history database, a path or a postgresql:// URL (default: "
                             "history.database, else <state.dir>/history.sqlite)")


def run(args: argparse.Namespace) -> int:
    from gateway import sources
    from gateway.cli import load_settings
    from gateway.history import stats
    from gateway.history.backends import open_history
    from gateway.history.store import HistoryError, QueryTimeout

    top = stats.DEFAULT_TOP if args.top is None else args.top
    if not 1 <= top <= stats.MAX_TOP:
        print(f"busgate stats: --top must be 1..{stats.MAX_TOP}, not {top}", file=sys.stderr)
        return EX_USAGE
    try:
        week = stats.parse_week(args.week) if args.week else stats.last_complete_week()
    except stats.BadWeek as exc:
        print(f"busgate stats: --week: {exc}", file=sys.stderr)
        return EX_USAGE
    settings = load_settings(args)
    try:
        store = open_history(settings, database=args.database, readonly=True)
    except HistoryError as exc:
        print(f"busgate stats: {exc}", file=sys.stderr)
        return EX_USAGE
    try:
        found = stats.overview(store, week, index=sources.type_index(settings), top=top)
    except (QueryTimeout, HistoryError) as exc:
        print(f"busgate stats: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(found.as_json(), option=orjson.OPT_INDENT_2).decode()
                         + "\n")
    else:
        sys.stdout.write(render(found))
    return 0


def _change(count: Count) -> str:
    return f"{count.change:+d}" if count.change else "0"


def render(found: Overview) -> str:
    """The overview as a plain-text table for a terminal or a mail."""
    import datetime as dt

    from gateway.history.stats import kind_label

    week = found.week
    sunday = week.end.date() - dt.timedelta(days=1)
    lines = [f"busgate weekly overview {week}: {week.start.date()} to {sunday} (UTC)"
             + ("" if found.complete else ", not over yet"), ""]
    rows: list[tuple[str, str, str, str]] = [("", "this week", "last week", "change")]
    for kind in found.kinds:
        rows.append((kind_label(kind.name), str(kind.count), str(kind.previous),
                     _change(kind)))
        if len(kind.details) > 1:
            rows += [(f"  {name}", str(c.count), str(c.previous), _change(c))
                     for name, c in kind.details.items()]
    rows.append(("all messages", str(found.messages.count), str(found.messages.previous),
                 _change(found.messages)))
    first = max(len(r[0]) for r in rows)
    widths = [max(len(r[i]) for r in rows) for i in (1, 2, 3)]
    for row in rows:
        lines.append(f"{row[0]:<{first}}  " + "  ".join(
            f"{cell:>{width}}" for cell, width in zip(row[1:], widths, strict=True)).rstrip())
    for title, names in (("Most active packages", found.packages),
                         ("Most active people", found.users)):
        lines += ["", title + ":"]
        if not names:
            lines.append("  (none)")
        rank = len(str(len(names)))
        name_width = max((len(n) for n, _ in names), default=0)
        lines += [f"  {i:>{rank}}. {name:<{name_width}}  {count}"
                  for i, (name, count) in enumerate(names, 1)]
    return "\n".join(lines) + "\n"
