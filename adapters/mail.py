"""The mail front: route one RFC 822 mail to the source that claims it.

The mail is parsed once here (``adapters.mailparse.POLICY``: the default policy's
semantics, with parsed headers memoised), its header sizes bounded, then every
source with a :class:`~gateway.sources.MailSpec` is asked in ascending priority
whether it claims the mail; the first that does parses it (bug tracker mail goes
to debbugs, which asks early; dak asks last and takes the rest). An empty list
means "nothing known here": the caller keeps the mail as unrecognized.

``settings`` carries the operator's trust policy (``[dak]`` signatures and
keyring, ``debbugs.link`` for bug links, ``mail.max_header_bytes``). The daemon,
``busgate mail --dry-run`` and ``busgate reprocess`` always pass it; without it
(library use, unit tests) the embedded defaults bound the headers and each source
uses its defaults (links to the default bug tracker, dak signatures unchecked).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from adapters import mailparse
from gateway import sources
from gateway.event import Event

if TYPE_CHECKING:
    from gateway.config import Settings


def parse_mail(raw: bytes, settings: Settings | None = None) -> list[Event]:
    max_header = settings.mail.max_header_bytes if settings is not None else \
        mailparse.MAX_HEADER_BYTES
    message = mailparse.parse(raw)
    mailparse.check_header_sizes(message, max_header)
    for claims, parse in _routes():
        if claims(message):
            return list(parse(message, raw, settings))
    return []


_ROUTES: tuple[object, list[tuple[Callable[..., bool], Callable[..., list[Event]]]]] = (None, [])


def _routes() -> list[tuple[Callable[..., bool], Callable[..., list[Event]]]]:
    """(claims, parse) of every mail-fed source in priority order, resolved once per
    registry (a worker parses thousands of mails)."""
    global _ROUTES
    registry = sources.registry()
    if _ROUTES[0] is not registry:
        routes = []
        for source in sources.mail_sources():
            assert source.mail is not None
            routes.append((sources.resolve(source.mail.claims),
                           sources.resolve(source.mail.parse)))
        _ROUTES = (registry, routes)
    return _ROUTES[1]
