"""The wanna-build source: the build queue's ``transactions`` log, polled from its
PostgreSQL database -> ``wanna-build.build.<state>``."""

from __future__ import annotations

from adapters.wannabuild.settings import WannaBuildSettings
from gateway.errors import ConfigError
from gateway.sources import PollerSpec, Source

TYPE_CHECKING = False  # typing's, without importing typing (the registry loads this)
if TYPE_CHECKING:
    import argparse


def validate(section: WannaBuildSettings, settings: object) -> None:
    """An enabled poller needs a database (else ``run`` would stop with exit 69); the
    rest is checked whether enabled or not, without touching the database."""
    if section.enabled and not section.dsn.strip():
        raise ConfigError("the wanna-build poller is enabled but has no database connection "
                          "string", key="wannabuild.dsn")
    if section.since:
        from adapters.wannabuild.poller import parse_since

        parse_since(section.since)
    if section.timezone:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(section.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"unknown time zone {section.timezone!r}",
                              key="wannabuild.timezone") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``busgate poll wanna-build``'s own options. ``--since`` starts this run at a
    timestamp whatever the cursor says (rows already in the outbox are not published
    again)."""
    parser.add_argument("--dsn", help="libpq connection string (overrides wannabuild.dsn)")
    parser.add_argument("--since", metavar="TIMESTAMP",
                        help="start at this ISO 8601 time (no offset: the database's local "
                             "time) instead of the cursor or, on a first run, the newest row")


def make_poller(settings, options: argparse.Namespace | None):  # type: ignore[no-untyped-def]
    """The poller for ``settings``, with ``busgate poll wanna-build``'s options applied."""
    from adapters.wannabuild.poller import from_settings, parse_since

    if options is None:
        return from_settings(settings)
    since = parse_since(options.since, key="--since") if options.since else None
    return from_settings(settings, since=since, dsn=options.dsn)


SOURCE = Source(
    name="wanna-build",
    section="wannabuild",
    settings=WannaBuildSettings,
    validate=validate,
    poller=PollerSpec(factory="adapters.wannabuild.source:make_poller",
                      add_arguments="adapters.wannabuild.source:add_arguments",
                      help="poll the wanna-build database (build state changes)"),
    messages="adapters.wannabuild.messages:TYPES",
    description="the build queue (wanna-build's PostgreSQL database)",
)
