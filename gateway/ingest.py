"""Turn one spool item (or quarantined input) into outbox rows, or into quarantine.

One decision (:func:`decide`: size, parse, validate each event against its
message type) made the same way for the spool worker, group commit, ``busgate
reprocess`` and ``busgate mail --dry-run``. Its outcomes: events committed;
nothing recognized (kept in quarantine as ``unrecognized``, counted); the
parser failed (kept as ``error`` with the message, for ``busgate reprocess``);
an event does not match its type's schema (kept as ``invalid``, naming the type
and the failing place: nothing of that input is published); or the input is over
its size limit (``oversize``).

A poison item gets one attempt: whatever goes wrong in reading, parsing or
building its envelopes (anything but the state database itself failing) sends
it to quarantine with the reason, and the worker goes on with the next item.
Quarantine itself is bounded (``[quarantine]``): past its caps an input keeps
its reason and size, not its bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import jsonbounds
from gateway.attempts import Attempts
from gateway.config import Settings
from gateway.errors import ParseError, StoreError
from gateway.event import Event
from gateway.messages import Message, MessageValidationError, TypeIndex
from gateway.spool import OVERSIZE_KEEP, RejectedItem, Spool
from gateway.store import Store

if TYPE_CHECKING:  # polling.apply may import this module: no import cycle at load time
    from gateway.polling import PollResult

log = logging.getLogger(__name__)

#: A parser gets the raw bytes and the settings (trust policy, links, bounds) it may need.
Parser = Callable[[bytes, "Settings | None"], list[Event]]

#: The spool item kind the core parses itself (``busgate publish``, a hook's events);
#: every other kind is parsed by the source that declares it (``Source.spool_kinds``).
EVENTS_KIND = "events"

#: Quarantine reasons of spool entries that were never read (a FIFO, a symlink...).
UNPARSABLE = ("not-regular", "unreadable")
#: Longest error text kept with a quarantined input.
MAX_ERROR_CHARS = 4000
#: Most events per transaction (one input's, or a group's).
GROUP_EVENTS = 10000


@dataclass(frozen=True)
class Outcome:
    added: int = 0
    duplicates: int = 0
    quarantined: str | None = None  # reason, when the item went to quarantine
    error: str | None = None
    set_aside: bool = False  # the spool entry is not a file to delete: move it aside


def parser_for(kind: str) -> Parser:
    """The parser of ``kind``: the core's for ``events``, else the registered source's."""
    if kind == EVENTS_KIND:
        return parse_events
    from gateway import sources

    parser = sources.spool_parser(kind)
    if parser is None:
        raise ParseError(f"no parser for spool item kind {kind!r} (no registered source "
                         "declares it)")
    return parser


def parse_events(raw: bytes, settings: Settings | None = None) -> list[Event]:
    """An ``events`` item: one JSON event record (``Event.to_dict``) per line.

    A record's body may nest at most ``ingest.max_json_depth`` levels (the record
    adds one).
    """
    max_depth = settings.ingest.max_json_depth if settings is not None else 64
    events = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record, float_free = jsonbounds.loads_flagged(line, max_depth + 1)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ParseError(f"line {number}: not a JSON event record: {exc}") from None
        except ParseError as exc:
            raise ParseError(f"line {number}: {exc}") from None
        try:
            events.append(Event.from_dict(record, float_free=float_free))
        except ParseError as exc:
            raise ParseError(f"line {number}: {exc}") from None
    return events


def size_limit(settings: Settings, kind: str) -> int:
    """Largest item of ``kind`` that is read and parsed."""
    if kind == "mail":
        return settings.mail.max_size
    if kind == "oversize":  # a JSON line and a head (`busgate mail --spool` keeps the default)
        return max(settings.quarantine.oversize_keep_bytes, OVERSIZE_KEEP) + 4096
    return settings.ingest.max_item_bytes


def ingest_item(store: Store, settings: Settings, path: os.PathLike[str],
                attempts: Attempts | None = None) -> Outcome:
    """Read one spool entry safely and ingest it; a bad entry is quarantined.

    Raises FileNotFoundError when the entry is gone, :class:`StoreError` when the
    state database fails (the item stays for a retry). Anything else the item
    causes ends in quarantine, so the caller may always remove (or set aside) it.
    With ``attempts``, an item the worker died on ``ingest.max_crashes`` times is
    quarantined as ``crashed`` without being parsed again.
    """
    name = os.path.basename(path)
    kind = Spool.kind_of(path)  # type: ignore[arg-type]
    if attempts is not None and attempts.begin(name) is None:
        try:
            return _crashed(store, settings, kind, path, name, attempts.max_crashes)
        finally:
            attempts.end(name)
    try:
        try:
            raw = Spool.read_item(path, size_limit(settings, kind),
                                  settings.quarantine.oversize_keep_bytes)
        except RejectedItem as exc:
            log.warning("spool entry %s: %s; quarantined as %s", name, exc.detail, exc.reason)
            outcome = _quarantine(store, settings, kind, exc.head, name, exc.reason,
                                  f"spool entry {exc.detail}", size=exc.size, partial=True)
            return Outcome(quarantined=outcome.quarantined, error=outcome.error,
                           set_aside=exc.set_aside)
        return ingest(store, settings, kind, raw, origin=name)
    finally:
        if attempts is not None:
            attempts.end(name)


def _crashed(store: Store, settings: Settings, kind: str, path: os.PathLike[str], name: str,
             crashes: int) -> Outcome:
    """Quarantine an item the worker died on, without parsing it (its bytes are kept
    for ``busgate reprocess`` after a fix, within the quarantine caps)."""
    error = (f"the spool worker died {crashes} time(s) while ingesting this input "
             "(crash or kill; see ingest.max_crashes)")
    log.error("spool item %s: %s; quarantined as crashed", name, error)
    try:
        raw = Spool.read_item(path, size_limit(settings, kind),
                              settings.quarantine.oversize_keep_bytes)
    except RejectedItem as exc:
        outcome = _quarantine(store, settings, kind, exc.head, name, "crashed",
                              f"{error}; spool entry {exc.detail}", size=exc.size, partial=True)
        return Outcome(quarantined="crashed", error=outcome.error, set_aside=exc.set_aside)
    return _quarantine(store, settings, kind, raw, name, "crashed", error)


def ingest(store: Store, settings: Settings, kind: str, raw: bytes, origin: str = "",
           batch: int = GROUP_EVENTS) -> Outcome:
    """Parse ``raw`` and commit its events (or quarantine it). Safe to run twice."""
    prepared = _prepare(store, settings, kind, raw, origin)
    if isinstance(prepared, Outcome):
        return prepared
    return _commit(store, settings, kind, raw, origin, prepared, batch)


@dataclass(frozen=True)
class Decision:
    """What becomes of one input: its events, or a quarantine reason (then no event of
    it is committed). ``kept`` is what quarantine keeps (the head of an input cut at
    its limit: ``partial``, of ``size`` bytes) and ``kind`` the input's kind there."""

    events: list[Event]
    reason: str | None = None
    error: str = ""
    kind: str = ""
    kept: bytes = b""
    size: int | None = None
    partial: bool = False


def decide(settings: Settings, kind: str, raw: bytes, index: TypeIndex, *,
           check_size: bool = True) -> Decision:
    """THE ingest decision: size, parse, validate. Pure: stores nothing, so the worker,
    group commit, reprocess and ``busgate mail --dry-run`` act on the same answer.

    ``check_size=False``: ``busgate reprocess --force-size``.
    """
    if kind == "oversize":
        return _oversize_record(raw)
    limit = size_limit(settings, kind)
    if check_size and len(raw) > limit:
        return Decision([], "oversize", f"{kind} item is {len(raw)} bytes, over the "
                        f"{limit}-byte limit", kind, raw, len(raw), partial=True)
    try:
        events = _parse(settings, kind, raw)
    except Exception as exc:  # any parser crash: keep the input, never lose it
        detail = "".join(traceback.format_exception_only(exc)).strip()
        return Decision([], "error", detail, kind, raw)
    if not events:
        if kind == "events":
            return Decision([])
        return Decision([], "unrecognized", "no known event in this input", kind, raw)
    _, invalid = check_events(events, index)
    if invalid:
        (number, event, why), more = invalid[0], len(invalid) - 1
        also = f" (and {more} more invalid event(s))" if more else ""
        return Decision([], "invalid", f"event {number} of {len(events)} "
                        f"({'.'.join(event.topic_tokens())}, key {event.key[:200]!r}): "
                        f"{why}{also}", kind, raw)
    return Decision(events)


def check_events(events: Iterable[Event], index: TypeIndex,
                 ) -> tuple[list[Event], list[tuple[int, Event, str]]]:
    """Validate each event's body against its message type (found by topic tokens).

    Returns ``(valid events, [(1-based position, event, why), ...])``; ``why`` names the
    type and the failing place, e.g. ``busgate.dak.package.accept.v1: version: 3 is not
    of type 'string'``. Pollers' results go through it before :func:`gateway.polling.apply`
    commits them (the invalid ones into the plan's quarantine).
    """
    valid: list[Event] = []
    invalid: list[tuple[int, Event, str]] = []
    for number, event in enumerate(events, 1):
        cls = index.lookup(event.topic_tokens())
        try:
            if cls is Message:  # the usual case, kept cheap: any JSON object
                if not isinstance(event.body, dict):
                    raise MessageValidationError(f"{Message.name}: the body must be a JSON "
                                                 f"object, not {type(event.body).__name__}")
            else:
                cls(event.body).validate()
        except MessageValidationError as exc:
            invalid.append((number, event, str(exc)))
        else:
            valid.append(event)
    return valid, invalid


def screen_poll(result: PollResult, index: TypeIndex) -> PollResult:
    """A poll's result with the events their type refuses moved into its plan's
    quarantine: what :func:`gateway.polling.apply` should commit, so the valid events
    and the cursors go in while each invalid event waits for ``busgate reprocess`` as an
    ``events`` record (reason ``invalid``, the type and place as the error, its key as
    the origin). Call it with the store's index: ``screen_poll(result,
    store.factory.index)``."""
    from gateway.polling import QuarantineItem

    valid, invalid = check_events(result.events, index)
    if not invalid:
        return result
    kept = [QuarantineItem(kind="events", raw=json.dumps(event.to_dict()).encode() + b"\n",
                           error=_clip(why), origin=_text(event.key[:200]), reason="invalid")
            for _, event, why in invalid]
    plan = dataclasses.replace(result.plan, quarantine=[*result.plan.quarantine, *kept])
    return dataclasses.replace(result, events=valid, plan=plan)


def _prepare(store: Store, settings: Settings, kind: str, raw: bytes,
             origin: str) -> Outcome | list[Event]:
    """The events of ``raw``, or the outcome when there are none to commit (an input
    that is quarantined, or an empty ``events`` item)."""
    decision = decide(settings, kind, raw, _index(store))
    if decision.reason is None:
        return decision.events if decision.events else Outcome()
    if decision.reason in ("error", "invalid"):
        log.warning("%s item %s quarantined as %s: %s", kind, origin or "(unnamed)",
                    decision.reason, decision.error)
    return _quarantine(store, settings, decision.kind, decision.kept, origin,
                       decision.reason, decision.error, size=decision.size,
                       partial=decision.partial)


def _index(store: Store) -> TypeIndex:
    """The type index of the store's envelope factory (the one headers are made from)."""
    factory = store.factory
    index = getattr(factory, "index", None)
    return index if index is not None else TypeIndex(())


def _commit(store: Store, settings: Settings, kind: str, raw: bytes, origin: str,
            events: list[Event], batch: int = GROUP_EVENTS) -> Outcome:
    """Commit one input's events, ``batch`` per transaction; an event no envelope can
    carry sends the input to quarantine."""
    added = 0
    try:
        for start in range(0, len(events), batch):
            chunk = events[start:start + batch]
            with store.transaction() as tx:
                added += len(tx.add_events(chunk))
                tx.bump(f"ingested.{kind}", 1 if start == 0 else 0)
    except StoreError:
        raise  # the database, not the item: keep the item and retry later
    except Exception as exc:  # an event no envelope can carry (topic too long, NaN...)
        detail = "".join(traceback.format_exception_only(exc)).strip()
        log.warning("cannot store the events of %s item %s (%d stored before): %s", kind,
                    origin or "(unnamed)", added, detail)
        return _quarantine(store, settings, kind, raw, origin, "error",
                           f"{detail} ({added} event(s) of this input stored before)")
    duplicates = len(events) - added
    if duplicates:
        log.info("%s item %s: %d duplicate event(s) ignored", kind, origin, duplicates)
    return Outcome(added=added, duplicates=duplicates)


@dataclass(frozen=True)
class _Parsed:
    path: Path
    kind: str
    raw: bytes
    events: list[Event]


def ingest_group(store: Store, settings: Settings, paths: list[Path], attempts: Attempts,
                 done: Callable[[Path, Outcome], None]) -> None:
    """Ingest many spool entries, committing the events of up to ``ingest.group_items``
    of them (and :data:`GROUP_EVENTS` events, ``ingest.group_bytes`` bytes) in one
    transaction: one fsync for many small items.

    ``done(path, outcome)`` is called once an entry's outcome is durable (its events
    committed or it is quarantined), so the caller may remove it then and only then.
    An entry that vanished is skipped. One crash mark names the whole run while it is
    parsed and committed (see :mod:`gateway.attempts`): writing and removing a mark per
    entry cost ~100 µs of wall time an entry, as much as the rest of a small item. A
    death then is held against none of them, and the next worker ingests each alone,
    under its own mark, where a culprit is counted. A group whose transaction fails for
    anything but the database is committed again entry by entry, so only the poison
    one is quarantined. Raises :class:`StoreError` as :func:`ingest_item` does.
    """
    caps = settings.ingest
    group: list[_Parsed] = []
    held = events = 0

    def flush() -> None:
        nonlocal held, events
        if group:
            _commit_group(store, settings, list(group), done)
        group.clear()
        held = events = 0

    attempts.begin_group([path.name for path in paths])
    try:
        for position, path in enumerate(paths):
            name, kind = path.name, Spool.kind_of(path)
            try:
                raw = Spool.read_item(path, size_limit(settings, kind),
                                      settings.quarantine.oversize_keep_bytes)
            except FileNotFoundError:
                continue
            except RejectedItem:  # the one-entry path says why, under its own mark
                flush()
                with contextlib.suppress(FileNotFoundError):
                    done(path, ingest_item(store, settings, path, attempts))
                attempts.begin_group([p.name for p in paths[position + 1:]])
                continue
            prepared = _prepare(store, settings, kind, raw, name)
            if isinstance(prepared, Outcome):
                done(path, prepared)
                continue
            if group and (len(group) >= caps.group_items or held + len(raw) > caps.group_bytes
                          or events + len(prepared) > GROUP_EVENTS):
                flush()
            if len(prepared) >= GROUP_EVENTS or len(raw) > caps.group_bytes:
                done(path, _commit(store, settings, kind, raw, name, prepared))  # alone
                continue
            group.append(_Parsed(path, kind, raw, prepared))
            held += len(raw)
            events += len(prepared)
        flush()
    finally:
        attempts.end_group()


def _commit_group(store: Store, settings: Settings, group: list[_Parsed],
                  done: Callable[[Path, Outcome], None]) -> None:
    """One transaction for the group's events (its entries are under the group's mark)."""
    try:
        with store.transaction() as tx:
            added = [len(tx.add_events(item.events)) for item in group]
            for kind, count in Counter(item.kind for item in group).items():
                tx.bump(f"ingested.{kind}", count)
    except StoreError:
        raise
    except Exception as exc:  # one entry's events cannot be stored: find which
        log.warning("a group of %d spool items could not be committed (%s); committing "
                    "them one by one", len(group), exc)
        for item in group:
            done(item.path, _commit(store, settings, item.kind, item.raw, item.path.name,
                                    item.events))
        return
    for item, count in zip(group, added, strict=True):
        if count < len(item.events):
            log.info("%s item %s: %d duplicate event(s) ignored", item.kind, item.path.name,
                     len(item.events) - count)
        done(item.path, Outcome(added=count, duplicates=len(item.events) - count))


def reprocess(store: Store, item: dict[str, object], *, force_size: bool = False,
              settings: Settings | None = None) -> Outcome:
    """Run a quarantined input through its parser again (after a fix).

    On success its events are committed and the item released in one
    transaction; otherwise the item stays, with the new error.
    """
    kind, raw, ident = str(item["kind"]), bytes(item["raw"]), int(item["id"])  # type: ignore[call-overload]
    if item["reason"] == "oversize" and not force_size:
        return Outcome(quarantined="oversize", error=str(item["error"]))
    if item["reason"] in UNPARSABLE:  # nothing was read: there is nothing to parse again
        return Outcome(quarantined=str(item["reason"]), error=str(item["error"]))
    if settings is None:
        from gateway import config

        settings = config.Settings()
    decision = decide(settings, kind, raw, _index(store), check_size=not force_size)
    if decision.reason is not None:
        detail = _clip(decision.error)
        with store.transaction() as tx:
            tx.update_quarantine(ident, error=detail, reason=decision.reason)
        return Outcome(quarantined=decision.reason, error=detail)
    events = decision.events
    try:
        with store.transaction() as tx:
            added = len(tx.add_events(events))
            tx.release(ident)
            tx.bump("reprocessed")
    except StoreError:
        raise
    except Exception as exc:  # parsed, but no envelope can carry it (topic too long...)
        detail = _clip("".join(traceback.format_exception_only(exc)).strip())
        with store.transaction() as tx:
            tx.update_quarantine(ident, error=detail, reason="error")
        return Outcome(quarantined="error", error=detail)
    return Outcome(added=added, duplicates=len(events) - added)


def _parse(settings: Settings, kind: str, raw: bytes) -> list[Event]:
    return parser_for(kind)(raw, settings)


def _oversize_record(raw: bytes) -> Decision:
    """What ``busgate mail`` left for a mail over its limit: metadata line + head."""
    meta_line, _, head = raw.partition(b"\n")
    try:
        meta = json.loads(meta_line)
        kind, size, limit = str(meta["kind"]), int(meta["size"]), int(meta["limit"])
    except (ValueError, KeyError, TypeError):
        return Decision([], "error", "malformed oversize record", "oversize", raw)
    return Decision([], "oversize", f"{kind} of {size} bytes, over the {limit}-byte limit "
                    "(stopped while streaming)", kind, head, size, partial=True)


def _quarantine(store: Store, settings: Settings, kind: str, raw: bytes, origin: str,
                reason: str, error: str, *, size: int | None = None,
                partial: bool = False) -> Outcome:
    """Keep an input in quarantine within ``[quarantine]``'s caps.

    ``raw`` is the whole input, or (``partial``) only its head, of ``size`` bytes.
    Past ``max_items`` nothing is stored but a log line and a counter; past
    ``max_bytes`` the row keeps reason, error and size, and no bytes.
    """
    caps = settings.quarantine
    size = len(raw) if size is None else size
    kind, origin, error = _text(kind), _text(origin), _clip(_text(error))
    if partial:
        raw = raw[:caps.oversize_keep_bytes]
        if len(raw) < size:
            error += f" [first {len(raw)} of {size} bytes kept]"
    with store.transaction() as tx:
        count, used = tx.quarantine_usage()
        if count >= caps.max_items:
            tx.bump("quarantine.dropped")
            dropped = True
        else:
            dropped = False
            if used + len(raw) > caps.max_bytes:
                error += (f" [raw input of {size} bytes not kept: quarantine.max_bytes "
                          f"({caps.max_bytes}) reached]")
                raw = b""
                tx.bump("quarantine.raw_dropped")
            tx.quarantine(kind, raw, error=error, reason=reason, origin=origin)
    if dropped:
        log.error("quarantine full (quarantine.max_items = %d): %s item %s (%d bytes, %s: "
                  "%s) not kept", caps.max_items, kind, origin or "(unnamed)", size, reason,
                  error)
    return Outcome(quarantined=reason, error=error)


def _text(value: str) -> str:
    """Valid UTF-8 for SQLite: a spool file name may hold any bytes (surrogate escapes)."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _clip(text: str) -> str:
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return text[:MAX_ERROR_CHARS] + f"... ({len(text)} characters)"
