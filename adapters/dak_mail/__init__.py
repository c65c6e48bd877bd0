"""dak (Debian Archive Kit) mail -> ``dak.*`` events.

Entry point for the mail router: :func:`parse_dak_mail`. It returns [] for a
well-formed mail that is not a known dak mail (the daemon keeps it as
unrecognized) and raises :class:`gateway.errors.ParseError` for a dak mail it
cannot read faithfully (the daemon quarantines it with the error).
:func:`parse_removals_822` reads ftp-master's removals.822 log into the same
``dak.package.remove`` events as the removal mails.

A mail that classifies as dak's has its OpenPGP signature checked
(:mod:`adapters.dak_mail.signature`) per the operator's :class:`Trust`: with
``require`` a mail without a good signature is a :class:`ParseError`; events
carry ``signature`` (status, fingerprint) so a consumer can tell.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the source
if TYPE_CHECKING:       # registry imports this package on every run of a command
    from email.message import Message

    from adapters.dak_mail.signature import Trust
    from gateway.event import Event

__all__ = ["parse_dak_mail", "parse_removals_822"]


def parse_dak_mail(message: Message, raw: bytes, trust: Trust | None = None) -> list[Event]:
    """Events of one dak mail; ``trust`` None means translation only (signature unchecked)."""
    from adapters.dak_mail import signature
    from adapters.dak_mail.classify import classify
    from adapters.dak_mail.parser import Mail, build_events
    from adapters.dak_mail.signature import Trust
    from gateway.errors import ParseError

    classified = classify(message)
    if classified is None:
        return []
    verdict = signature.verify(message, raw, trust or Trust(mode="ignore"))
    if trust is not None and trust.mode == "require" and verdict.status != signature.VALID:
        detail = f": {verdict.detail}" if verdict.detail else ""
        raise ParseError(f"dak mail without a good signature ({verdict.status}{detail}); "
                         "dak.signatures = require")
    return build_events(Mail(message, raw, classified, verdict))


def parse_removals_822(text: str) -> list[Event]:
    """``dak.package.remove`` events for each stanza of a removals.822 log."""
    from adapters.dak_mail.removal import parse_removals_822 as parse
    from adapters.dak_mail.removal import removal_key
    from adapters.mailparse import date_to_epoch
    from gateway.event import Event

    events = []
    for removal in parse(text):
        sources = sorted({r["package"] for r in removal["rows"]
                          if "source" in r["architectures"]})
        body = {
            **removal,
            "sources": sources,
            "origin": "removals.822",
            "message_id": None,
            "mail": None,
            "program": "dak rm",
        }
        packages = tuple(sources or sorted({r["package"] for r in removal["rows"]}))
        events.append(Event(service="dak", object="package", event="remove",
                            key=removal_key(removal["suites"], removal["rows"]), body=body,
                            packages=packages, time=date_to_epoch(removal["date"])))
    return events
