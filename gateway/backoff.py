"""The one back-off rule for a failing poll (the daemon's scheduler and ``busgate poll``).

After the n-th failure in a row the next try waits ``interval * 2**(n-1)``, at most
``MAX_INTERVALS`` intervals and at most ``MAX_SECONDS`` (but never less than one
interval): a source that is down is asked less and less often, yet is not left alone
for hours, and the first retry comes one interval later, as an ordinary poll would.
"""

from __future__ import annotations

#: Longest wait, in poll intervals (a 5-minute poller retries at least every 40 minutes).
MAX_INTERVALS = 8
#: Longest wait in seconds, whatever the interval.
MAX_SECONDS = 3600.0


def delay(interval: float, failures: int) -> float:
    """Seconds to wait before the next try after ``failures`` failures in a row (0: none)."""
    if failures <= 0:
        return interval
    return min(interval * 2 ** min(failures - 1, 32), interval * MAX_INTERVALS,
               max(MAX_SECONDS, interval))
