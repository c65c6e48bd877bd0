"""The debbugs source: the BTS's SOAP interface (polled) and its mail (routed to it by
the mail front) -> ``debbugs.bug.*``."""

from __future__ import annotations

from adapters.debbugs.settings import DebbugsSettings
from gateway.errors import ConfigError
from gateway.sources import MailSpec, PollerSpec, Source

TYPE_CHECKING = False  # typing's, without importing typing (the registry loads this)
if TYPE_CHECKING:
    import argparse
    from email.message import Message

    from gateway.event import Event


def validate(section: DebbugsSettings, settings: object) -> None:
    """An enabled poller needs an http(s) SOAP URL (else it would fail every poll)."""
    if section.enabled:
        _check_url(section.url)


def _check_url(url: str) -> None:
    url = url.strip()
    if not url:
        raise ConfigError("the debbugs poller is enabled but has no SOAP URL",
                          key="debbugs.url")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"must be an http:// or https:// URL, not {url!r}", key="debbugs.url")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``busgate poll debbugs``'s own options; they override the configuration."""
    parser.add_argument("--url", help="SOAP endpoint (overrides debbugs.url)")
    parser.add_argument("--package", action="append", default=[], metavar="NAME",
                        help="watch this binary package's bugs (repeatable; replaces "
                             "debbugs.packages)")
    parser.add_argument("--source", action="append", default=[], metavar="NAME",
                        help="watch this source package's bugs (repeatable; replaces "
                             "debbugs.sources)")
    parser.add_argument("--backfill", action="store_true",
                        help="report every watched bug not seen before as debbugs.bug.new "
                             "instead of recording a silent baseline")


def make_poller(settings, options: argparse.Namespace | None):  # type: ignore[no-untyped-def]
    """The poller for ``settings``, with ``busgate poll debbugs``'s options applied."""
    from adapters.debbugs.poller import from_settings

    backfill = False
    if options is not None:
        changes: dict[str, object] = {}
        if options.url:
            changes["url"] = options.url
        if options.package:
            changes["packages"] = list(options.package)
        if options.source:
            changes["sources"] = list(options.source)
        settings = settings.with_section("debbugs", **changes)
        backfill = options.backfill
    if not settings.debbugs.url.strip():  # refused before any state is created
        raise ConfigError("no SOAP endpoint configured (or give --url)", key="debbugs.url",
                          path=settings.loaded_from[0] if settings.loaded_from else None)
    _check_url(settings.debbugs.url)
    return from_settings(settings, backfill=backfill)


def claims(message: Message) -> bool:
    from adapters.debbugs.mail import is_bts_mail

    return is_bts_mail(message)


def parse(message: Message, raw: bytes, settings: object | None) -> list[Event]:
    from adapters.debbugs.mail import DEFAULT_LINK, parse_bts_mail

    link = settings.section("debbugs").link if settings is not None else DEFAULT_LINK  # type: ignore[attr-defined]
    return parse_bts_mail(message, raw, link=link)


SOURCE = Source(
    name="debbugs",
    section="debbugs",
    settings=DebbugsSettings,
    validate=validate,
    poller=PollerSpec(factory="adapters.debbugs.source:make_poller",
                      add_arguments="adapters.debbugs.source:add_arguments",
                      help="poll the debbugs SOAP interface (new/changed/closed/archived "
                           "bugs)"),
    mail=MailSpec(claims="adapters.debbugs.source:claims",
                  parse="adapters.debbugs.source:parse", priority=10),
    messages="adapters.debbugs.messages:TYPES",
    description="the bug tracking system: SOAP polls and BTS mail",
)
