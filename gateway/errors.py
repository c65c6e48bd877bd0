"""One exception hierarchy, so callers can tell a bad input from a transient failure."""

from __future__ import annotations


class BusgateError(Exception):
    """Base of every error busgate raises on purpose."""


class ConfigError(BusgateError):
    """A configuration file or value is wrong. Names the file and the key."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        self.path = path
        self.key = key
        #: The message without the file and key.
        self.message = message
        where = ": ".join(part for part in (path, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class TopicError(BusgateError, ValueError):
    """A topic or one of its tokens breaks the grammar."""


class EnvelopeError(BusgateError, ValueError):
    """Frames that are not a valid busgate/fedmsg envelope."""


class SpoolError(BusgateError):
    """The spool could not durably take an item (disk full, permissions...)."""


class StoreError(BusgateError):
    """The state database could not be opened or written."""


class TransientError(BusgateError):
    """A failure worth retrying later (source down, timeout); nothing was lost."""


class ParseError(BusgateError, ValueError):
    """An input an adapter cannot turn into events; it goes to quarantine."""


class StateLostError(StoreError):
    """The state database is corrupt, not a database, deleted or replaced: retrying
    cannot help, the daemon stops (exit 69) instead of writing where no one reads."""
