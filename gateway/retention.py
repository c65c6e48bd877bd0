"""Outbox retention: bound the state database's growth without losing anything unsent.

Rows go only when every enabled transport has published them (the lowest of their
cursors; a disabled transport holds nothing back) and
never the newest one (the next seq_id follows it). Their keys stay in
``pruned_uids`` for ``state.dedup_days`` (and ``dedup_max_keys``; by run, forgotten a
run at a time: gateway/pruned_keys.py), so a source repeating an old input within that
window still adds nothing. Replay answers a
request for a pruned seq_id with that fact (``busgate_replay.pruned_seq_id``, or an
error for a plain request) and the subscriber counts such losses, instead of a
silent gap.

Pruning runs in the daemon in steps of :data:`PRUNE_STEP` rows, one transaction
each, so the spool worker's commits are never held up for long.

With ``[history] enabled`` the recorder inside ``busgate run`` is one more reader
the outbox waits for (``history.retain_unrecorded``): a row it has not stored yet
(its position for this publisher and epoch, in the history database) stays, so a
recorder that was down or slow catches up by replay instead of losing messages
to retention. (Over AMQP the durable queue holds them; ZeroMQ only.)
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

from gateway.config import Settings, StateSettings
from gateway.store import Store

log = logging.getLogger(__name__)

#: Rows removed per transaction (the writer lock is held for one step only).
PRUNE_STEP = 20000
#: Seconds between retention passes in ``busgate run``.
PRUNE_INTERVAL = 30.0
DAY = 86400


def enabled(state: StateSettings) -> bool:
    return bool(state.outbox_max_rows or state.outbox_max_age_days)


def target(store: Store, state: StateSettings, now: float) -> int:
    """The highest seq_id the configured bounds allow to prune (0: none), before the
    transports' floor is applied."""
    conn = store.connect()
    upto = 0
    if state.outbox_max_rows:
        upto = max(upto, store.last_seq_id() - state.outbox_max_rows)
    if state.outbox_max_age_days:
        # timestamps never go backwards along seq_id, so this is a prefix of the outbox
        row = conn.execute("SELECT MAX(seq_id) FROM outbox WHERE timestamp < ?",
                           (int(now - state.outbox_max_age_days * DAY),)).fetchone()
        upto = max(upto, row[0] or 0)
    return upto


def history_cursor(settings: Settings, store: Store) -> int | None:
    """The last seq_id of this gateway (this epoch) the recorder has stored: 0 when it
    has stored none (no database yet, another epoch); None when ``[history]`` is not
    enabled or records from an AMQP queue (no position to read)."""
    history = settings.history
    if not history.enabled or history.amqp_queue:
        return None
    path = settings.history_path
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path.absolute()}?mode=ro", uri=True, timeout=5.0)
        try:
            row = db.execute("SELECT epoch, seq_id FROM position WHERE publisher = ?",
                             (settings.publisher.name,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:  # not made yet (no table): nothing recorded
        return 0
    return int(row[1]) if row is not None and row[0] == store.epoch() else 0


def history_floor(settings: Settings, store: Store) -> int | None:
    """What retention must keep for the recorder (:func:`history_cursor`), or None."""
    if not settings.history.retain_unrecorded:
        return None
    return history_cursor(settings, store)


def prune_once(store: Store, state: StateSettings, now: float | None = None,
               step: int = PRUNE_STEP, transports: list[str] | None = None,
               recorded: int | None = None) -> int:
    """One retention pass (all steps); returns the rows pruned. ``transports``: the
    enabled ones, whose cursors bound it (None: every cursor in the store);
    ``recorded``: the recorder's position (:func:`history_floor`), a bound too."""
    now = time.time() if now is None else now
    if transports is None:
        floor = store.sent_floor()
    else:
        cursors = store.transport_cursors(enabled=transports)
        floor = min((c["cursor"] for c in cursors.values()), default=0)
    if recorded is not None:
        floor = min(floor, recorded)
    upto = min(target(store, state, now), floor)
    pruned = 0
    while True:
        with store.transaction() as tx:
            gone = tx.prune_outbox(upto, step)
        pruned += gone
        if gone < step:
            break
    with store.transaction() as tx:
        tx.forget_pruned(int(now - state.dedup_days * DAY), state.dedup_max_keys)
    return pruned


async def run(store: Store, settings: Settings, every: float = PRUNE_INTERVAL) -> None:
    """``busgate run``'s retention task, when a bound is set (:func:`enabled`); never ends."""
    from gateway.config import enabled_transports

    state, transports = settings.state, enabled_transports(settings)
    while True:
        recorded = await asyncio.to_thread(history_floor, settings, store)
        pruned = await asyncio.to_thread(prune_once, store, state, None, PRUNE_STEP,
                                         transports, recorded)
        if pruned:
            log.info("outbox retention pruned %d rows (up to seq_id %d)", pruned,
                     store.pruned_seq_id())
        await asyncio.sleep(every)
