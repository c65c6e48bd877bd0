"""The ``[wannabuild]`` table: the wanna-build database and how it is polled."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WannaBuildSettings:
    #: Schedule the wanna-build poller inside ``busgate run``.
    enabled: bool = False
    #: libpq connection string of the wanna-build database (read-only role).
    dsn: str = ""
    #: Seconds between polls.
    interval: float = 60.0
    #: A crontab line (``*/5 * * * *``, local wall time) instead of ``interval``; empty
    #: means poll every ``interval`` seconds.
    schedule: str = ""
    #: Assumed age of transactions already open at a first (or ``--since``) run.
    overlap_seconds: float = 300.0
    #: Statement timeout for the poller's query, in milliseconds.
    statement_timeout_ms: int = 30000
    #: Where a first run starts (ISO timestamp); empty means at the newest row.
    since: str = ""
    #: Longest failure text copied into an event body, in characters.
    max_failure_chars: int = 4000
    #: Most new rows one poll reads (a backlog is worked off over several polls).
    batch_rows: int = 10000
    #: Seconds to wait for the database connection.
    connect_timeout: float = 10.0
    #: Time zone wanna-build's sessions write ``transactions.time`` in; empty means the
    #: server's default (only needed when they differ).
    timezone: str = ""
    #: Build status page put in each event's ``link`` (the message's ``url``):
    #: ``{package}`` and ``{distribution}`` are replaced by the URL-quoted values; empty
    #: means no link.
    link: str = "https://buildd.debian.org/status/package.php?p={package}&suite={distribution}"
