"""The order of the rows one wanna-build run wrote: follow the state chain.

Every row of one wanna-build transaction carries the same ``time`` (``now()`` is the
transaction's start), so time cannot order them. Each row says where its package came
from (``prevstate``) and went (``state``): for one package those links give the order
wanna-build wrote them in (Needs-Build, then BD-Uninstallable; --take, then
--set-built), and the last row is the package's final state. When the links do not
make one chain (a loop, a gap, hostile values), the rows keep the order they sit in
the table (``ctid``), which for an append-only table is the order they were written.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from adapters.wannabuild.translate import Row, text

#: Groups larger than this keep table order (a chain search is quadratic).
MAX_CHAIN = 64
_CTID = re.compile(r"\((\d+),(\d+)\)")


def position(row: Row) -> tuple[int, int]:
    """``ctid`` ``(page,item)`` as numbers; rows without one sort first."""
    match = _CTID.fullmatch(text(row.position) or "")
    return (int(match[1]), int(match[2])) if match else (-1, -1)


def _group(row: Row) -> tuple[object, ...]:
    return (row.time, text(row.architecture), text(row.distribution), text(row.package))


def in_written_order(rows: Iterable[Row]) -> list[Row]:
    """``rows`` (sorted by time and package) with each run's rows of one package chained."""
    ordered: list[Row] = []
    for _, group in itertools.groupby(rows, key=_group):
        ordered.extend(chain(list(group)))
    return ordered


def chain(rows: list[Row]) -> list[Row]:
    """The rows of one package in one run, in the order their states link up."""
    rows = sorted(rows, key=position)
    if len(rows) < 2 or len(rows) > MAX_CHAIN:
        return rows
    produced = [text(r.state) for r in rows]
    # start where the chain has no predecessor; in a loop, try every row in table order
    starts = sorted(range(len(rows)), key=lambda i: (text(rows[i].prevstate) in produced, i))
    for start in starts:
        order, used = [start], {start}
        while len(order) < len(rows):
            state = text(rows[order[-1]].state)
            step = next((i for i in range(len(rows))
                         if i not in used and text(rows[i].prevstate) == state), None)
            if step is None:
                break
            order.append(step)
            used.add(step)
        if len(order) == len(rows):
            return [rows[i] for i in order]
    return rows
