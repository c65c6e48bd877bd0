"""Route one RFC 822 mail to the adapter that knows its sender.

The mail is parsed once here (``adapters.mailparse.POLICY``: the default
policy's semantics, with parsed headers memoised); bug tracker mail
(``X-Loop: owner@bugs...``, ``X-Debian-PR-*``) goes to
``adapters.debbugs.mail``, everything else to ``adapters.dak_mail``. An empty
list means "nothing known here": the caller keeps the mail as unrecognized.

``settings`` carries the operator's trust policy (``[dak]`` signatures and
keyring, ``debbugs.link`` for bug links, ``mail.max_header_bytes``). The daemon,
``busgate mail --dry-run`` and ``busgate reprocess`` always pass it; without it
(library use, unit tests) the embedded defaults bound the headers, links use the
default bug tracker and dak signatures are not checked (``signature.status`` is
``unchecked``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters import mailparse
from gateway.event import Event

if TYPE_CHECKING:
    from gateway.config import Settings


def parse_mail(raw: bytes, settings: Settings | None = None) -> list[Event]:
    max_header = settings.mail.max_header_bytes if settings is not None else \
        mailparse.MAX_HEADER_BYTES
    message = mailparse.parse(raw)
    mailparse.check_header_sizes(message, max_header)
    bts = _bts_adapter()
    if bts is not None and bts.is_bts_mail(message):
        link = settings.debbugs.link if settings is not None else bts.DEFAULT_LINK
        return bts.parse_bts_mail(message, raw, link=link)
    from adapters import dak_mail

    trust = None
    if settings is not None:
        from adapters.dak_mail.signature import Trust

        trust = Trust(mode=settings.dak.signatures, keyrings=tuple(settings.dak.keyring),
                      gpgv=settings.dak.gpgv, timeout=settings.dak.verify_timeout)
    return dak_mail.parse_dak_mail(message, raw, trust)


def _bts_adapter():  # type: ignore[no-untyped-def]
    """``adapters.debbugs.mail``, or None in a checkout that does not have it yet."""
    try:
        from adapters.debbugs import mail
    except ModuleNotFoundError as exc:
        if exc.name in ("adapters.debbugs", "adapters.debbugs.mail"):
            return None
        raise
    return mail
