"""From followed messages to desktop notifications, at a bearable rate, through outages.

:class:`Desk` sits between the consumer and the D-Bus :class:`~gateway.desktop.Notifier`:

* **Rate**: at most ``max_per_minute`` notifications in any 60 seconds. The last slot
  is kept for a summary: past ``max_per_minute - 1`` messages, the rest are only
  counted, and once the burst is over (``SUMMARY_QUIET`` seconds without one) or has
  lasted a whole window, one "N more messages" notification says how many and from
  which services. A storm that goes on past a window updates that same notification
  (``replaces``, with the running count) rather than stacking new ones. A burst of
  1,000 is thus ``max_per_minute`` popups.
* **Outages**: when no notification server answers (none on the bus, the session bus
  gone, a hung server), the error is logged once with its reason, wanted notifications
  wait in a queue bounded by the rate (the rest join the summary's count), and the call
  is tried again with back-off (``RETRY_FIRST`` doubling to ``RETRY_MAX`` seconds).
  Nothing is raised to the consumer: a desktop without a notifier is not a crash.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway import backoff
from gateway.desktop import LOW, DesktopError, Notification, Notifier

log = logging.getLogger(__name__)

#: The rate's window, in seconds ("per minute").
WINDOW = 60.0
#: Seconds without a suppressed message before the summary is shown.
SUMMARY_QUIET = 2.0
#: First retry after a failed call, and the longest wait between retries (seconds).
RETRY_FIRST, RETRY_MAX = 2.0, 60.0
#: Most services named in a summary's body (the rest are "others").
SUMMARY_SERVICES = 5
#: Most distinct services counted for one summary (a flood of made-up topics stays small).
MAX_COUNTED_SERVICES = 64


@dataclass
class DeskStats:
    shown: int = 0
    suppressed: int = 0
    summaries: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Desk:
    """Rate-limited, retrying delivery of notifications (see the module docstring)."""

    def __init__(self, notifier: Notifier, max_per_minute: int, *, expire_ms: int = -1,
                 clock: Callable[[], float] = time.monotonic, window: float = WINDOW,
                 quiet: float = SUMMARY_QUIET):
        self.notifier = notifier
        self.budget = max(1, max_per_minute - 1)  # the last slot is the summary's
        self.limit = max_per_minute
        self.expire_ms = expire_ms
        self.clock = clock
        self.window = window
        self.quiet = quiet
        self.stats = DeskStats()
        self._sent: deque[float] = deque()
        self._pending: deque[Notification] = deque()
        self._held = 0  # suppressed since the last summary
        self._held_services: Counter[str] = Counter()
        self._held_first = 0.0
        self._held_last = 0.0
        #: The summary on screen while a storm goes on (0: none), and its running count.
        self._storm_id = 0
        self._storm_total = 0
        self._failures = 0
        self._retry_at = 0.0
        self._last_error = ""

    # -- in ------------------------------------------------------------------------------
    def offer(self, note: Notification, service: str = "") -> None:
        """Show ``note`` now if the rate and the server allow, else queue or count it."""
        now = self.clock()
        self._expire(now)
        if self._held == 0 and not self._storm_id and \
                len(self._sent) + len(self._pending) < self.budget:
            self._pending.append(note)
        else:
            if self._held == 0:
                self._held_first = now
            self._held += 1
            self._held_last = now
            self.stats.suppressed += 1
            if service in self._held_services or len(self._held_services) < \
                    MAX_COUNTED_SERVICES:
                self._held_services[service] += 1
        self.tick()

    # -- out -----------------------------------------------------------------------------
    def tick(self) -> None:
        """Send what may be sent now: waiting notifications, then a due summary."""
        now = self.clock()
        if now < self._retry_at:
            return
        self._expire(now)
        if self._storm_id and not self._held and now - self._held_last >= self.quiet:
            self._storm_id = self._storm_total = 0  # the storm ended on a summary
        while self._pending and len(self._sent) < self.limit:
            if self._send(self._pending[0], now) is None:
                return
            self._pending.popleft()
            self.stats.shown += 1
        if self._held and not self._pending and len(self._sent) < self.limit:
            over = now - self._held_last >= self.quiet  # the burst is over
            if over or now - self._held_first >= self.window:
                total = self._held + (self._storm_total if self._storm_id else 0)
                ident = self._send(self._summary(total), now)
                if ident is not None:
                    self.stats.summaries += 1
                    self._held = 0
                    self._held_services.clear()
                    # mid-storm, the next summary replaces this one, counting on
                    self._storm_id, self._storm_total = (0, 0) if over else (ident, total)

    def idle(self) -> bool:
        """Nothing is waiting to be shown."""
        return not self._pending and not self._held

    def _summary(self, total: int) -> Notification:
        top = self._held_services.most_common(SUMMARY_SERVICES)
        counted = sum(n for _, n in top)
        parts = [f"{n} {name or 'other'}" for name, n in top]
        if self._held > counted:
            parts.append(f"{self._held - counted} others")
        return Notification(f"busgate: {total} more messages",
                            "Not shown, over the rate limit: " + ", ".join(parts),
                            urgency=LOW, replaces=self._storm_id, expire_ms=self.expire_ms)

    def _send(self, note: Notification, now: float) -> int | None:
        """The server's id for the shown ``note``, or None (failed; retry later)."""
        try:
            ident = self.notifier.notify(note)
        except DesktopError as exc:
            self._failures += 1
            self.stats.failures += 1
            wait = min(backoff.delay(RETRY_FIRST, self._failures), RETRY_MAX)
            self._retry_at = now + wait
            if str(exc) != self._last_error:
                log.error("cannot show notifications: %s; retrying (every %g s at most), "
                          "%d waiting", exc, RETRY_MAX, len(self._pending) + bool(self._held))
                self._last_error = str(exc)
            return None
        if self._failures:
            log.warning("notifications are shown again (after %d failed attempts)",
                        self._failures)
        self._failures = 0
        self._last_error = ""
        self._sent.append(now)
        return ident

    def _expire(self, now: float) -> None:
        while self._sent and now - self._sent[0] >= self.window:
            self._sent.popleft()


def note_for(envelope: dict[str, Any], description: Any, urgency: int,
             expire_ms: int = -1) -> Notification:
    """The notification for a message: its summary; its topic and link as the body."""
    from gateway import display

    topic = display.safe(display.topic_tail(str(envelope.get("topic", ""))))
    body = "\n".join([topic] + ([description.url] if description.url else []))
    return Notification(description.summary, body, urgency=urgency, expire_ms=expire_ms)
