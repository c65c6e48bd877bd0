"""The ``[debbugs]`` table: which bugs the SOAP poller watches, how hard it asks."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DebbugsSettings:
    #: Schedule the debbugs poller inside ``busgate run``.
    enabled: bool = False
    #: SOAP endpoint, e.g. https://bugs.debian.org/cgi-bin/soap.cgi
    url: str = ""
    #: Seconds between polls.
    interval: float = 300.0
    #: A crontab line (``*/5 * * * *``, local wall time) instead of ``interval``; empty
    #: means poll every ``interval`` seconds.
    schedule: str = ""
    #: Seconds before a SOAP call times out.
    timeout: float = 30.0
    #: Watch new bugs reported anywhere (``newest_bugs``).
    watch_new: bool = True
    #: How many newest bugs to ask for on each poll.
    newest_count: int = 100
    #: Watch the bugs of these binary packages / source packages / maintainer addresses.
    packages: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    maintainers: list[str] = field(default_factory=list)
    #: First poll of a new watch list records a silent baseline instead of ``new`` events.
    baseline: bool = True
    #: Bug page link stored in event bodies; ``{bug}`` is replaced by the number.
    link: str = "https://bugs.debian.org/{bug}"
    #: Bugs per ``get_status`` call (debbugs answers at most 500).
    batch: int = 500
    #: Days a bug that left the watch list (reassigned, out of ``newest_bugs``) is still polled.
    keep_days: float = 60.0
    #: Seconds a fresh close/new/forward seen by SOAP waits for the BTS mail reporting it.
    mail_grace: float = 60.0
    #: Extra tries of a failed SOAP call within one poll (then the poll fails and is retried).
    retries: int = 1
    #: Largest SOAP answer read, in bytes.
    max_response_bytes: int = 67108864
    #: WSDL describing the SOAP interface; empty means the shipped ``conf/debbugs.wsdl``.
    wsdl: str = ""
