"""Log lines that a remote party can trigger, bounded in rate.

A client decides how often an SMTP server logs "connection lost" or "bad
command"; 1,100 connections made 20 MB of log in 15 s. :class:`RateLimit`
is a logging filter (a token bucket per logger) that lets a burst through,
then about one record a second, and says how many it dropped on the next
record it lets through. :class:`Tally` turns an event that may happen
thousands of times a second (a refused connection) into one line a minute.
"""

from __future__ import annotations

import logging
import time


class RateLimit(logging.Filter):
    """Token bucket: ``burst`` records at once, then ``per_second`` on average."""

    def __init__(self, burst: int = 20, per_second: float = 1.0):
        super().__init__()
        self.burst = burst
        self.per_second = per_second
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.per_second)
        self._stamp = now
        if self._tokens < 1:
            self.dropped += 1
            return False
        self._tokens -= 1
        if self.dropped:
            record.msg = f"{record.msg} ({self.dropped} similar log lines dropped before this)"
            self.dropped = 0
        return True


def limit(logger: logging.Logger, burst: int = 20, per_second: float = 1.0) -> RateLimit:
    """Attach one :class:`RateLimit` to ``logger`` (once; the existing one is returned)."""
    for existing in logger.filters:
        if isinstance(existing, RateLimit):
            return existing
    bucket = RateLimit(burst, per_second)
    logger.addFilter(bucket)
    return bucket


class Tally:
    """Counts an event and logs ``message`` with the count at most once per ``every`` seconds."""

    def __init__(self, logger: logging.Logger, message: str, every: float = 60.0):
        self.logger = logger
        self.message = message
        self.every = every
        self.count = 0
        self.total = 0
        self._last = -every

    def note(self) -> None:
        self.count += 1
        self.total += 1
        if time.monotonic() - self._last >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.count:
            self.logger.warning(self.message, self.count)
            self.count = 0
        self._last = time.monotonic()
