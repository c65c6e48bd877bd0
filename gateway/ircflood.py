"""Flood control for ``busgate irc``: bounded lines per channel and per connection.

An IRC server disconnects (and a network's operators may ban) a client that sends faster
than its flood limit, so a burst on the bus must never become a burst on IRC. Two token
buckets bound every line sent: one per channel (``lines_per_minute``, ``burst``), so one
busy channel cannot drown a room, and one for the whole connection
(``server_lines_per_minute``, ``server_burst``), kept under the server's own limit
(RFC 1459 §8.10 lets a client about one line per two seconds after a short burst).

Lines waiting for their budget sit in a bounded per-channel queue. When it is full, one
*overflow* entry closes it and counts every further message for that channel; when that
entry's turn comes it is sent as a single "N more messages" line, and the queue opens
again. Order is kept (nothing jumps the overflow line), memory is bounded by the queue
length, and a flood of any size costs at most ``queue_lines + 1`` lines.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container
from dataclasses import dataclass, field


class Bucket:
    """A token bucket: ``capacity`` lines at once, refilled at ``per_minute`` a minute."""

    def __init__(self, per_minute: float, capacity: int, now: float):
        self.rate = per_minute / 60.0
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self.stamp = now

    def ready(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens >= 1.0

    def take(self) -> None:
        self.tokens -= 1.0

    def wait(self, now: float) -> float:
        """Seconds until the next token."""
        self.ready(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


@dataclass
class Overflow:
    """Messages folded into one "N more messages" line."""

    count: int = 0


@dataclass
class ThrottleStats:
    #: Lines handed out to be sent (messages and overflow lines).
    sent: int = 0
    #: Messages not sent as their own line (folded into an overflow line).
    folded: int = 0
    #: Overflow lines handed out.
    overflow_lines: int = 0
    #: Lines handed out per channel.
    per_channel: dict[str, int] = field(default_factory=dict)


def overflow_text(count: int, per_minute: int) -> str:
    noun = "message" if count == 1 else "messages"
    return (f"… {count} more {noun} not shown (flood control: at most {per_minute} lines "
            "a minute here)")


class Throttle:
    """Per-channel queues behind per-channel and connection-wide buckets."""

    def __init__(self, *, lines_per_minute: int, burst: int, queue_lines: int,
                 server_lines_per_minute: int, server_burst: int, now: float):
        self.lines_per_minute = lines_per_minute
        self.burst = burst
        self.queue_lines = max(1, queue_lines)
        self.server = Bucket(server_lines_per_minute, server_burst, now)
        self.buckets: dict[str, Bucket] = {}
        self.queues: dict[str, deque[str | Overflow]] = {}
        self.stats = ThrottleStats()

    def offer(self, channel: str, line: str, now: float) -> None:
        """Queue ``line`` for ``channel`` (or count it in the channel's overflow line)."""
        queue = self.queues.get(channel)
        if queue is None:
            queue = self.queues[channel] = deque()
            self.buckets[channel] = Bucket(self.lines_per_minute, self.burst, now)
        if queue and isinstance(queue[-1], Overflow):
            queue[-1].count += 1
            self.stats.folded += 1
        elif len(queue) >= self.queue_lines:
            queue.append(Overflow(1))
            self.stats.folded += 1
        else:
            queue.append(line)

    def pending(self) -> int:
        """Entries waiting (an overflow entry counts once)."""
        return sum(len(q) for q in self.queues.values())

    def due(self, now: float, open_: Container[str] | None = None) -> list[tuple[str, str]]:
        """(channel, text) lines that may be sent now, fairly across channels; only to
        channels in ``open_`` when given (the others' lines wait)."""
        out: list[tuple[str, str]] = []
        names = [name for name, queue in self.queues.items()
                 if queue and (open_ is None or name in open_)]
        if not names:
            return out
        progress = True
        while progress:
            progress = False
            for name in names:
                queue = self.queues[name]
                if not queue or not self.server.ready(now):
                    continue
                bucket = self.buckets[name]
                if not bucket.ready(now):
                    continue
                entry = queue.popleft()
                bucket.take()
                self.server.take()
                if isinstance(entry, Overflow):
                    self.stats.overflow_lines += 1
                    entry = overflow_text(entry.count, self.lines_per_minute)
                self.stats.sent += 1
                self.stats.per_channel[name] = self.stats.per_channel.get(name, 0) + 1
                out.append((name, entry))
                # served: to the back of the line (the queues' order is the turn order)
                self.queues[name] = self.queues.pop(name)
                progress = True
        return out

    def next_due(self, now: float) -> float | None:
        """Seconds until a waiting line may go (None: nothing waits)."""
        waits = [self.buckets[name].wait(now) for name, q in self.queues.items() if q]
        if not waits:
            return None
        return max(min(waits), self.server.wait(now))
