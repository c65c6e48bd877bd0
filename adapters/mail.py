"""Route one RFC 822 mail to the adapter that knows its sender.

The mail is parsed once here (``adapters.mailparse.POLICY``: the default
policy's semantics, with parsed headers memoised); bug tracker mail
(``X-Loop: owner@bugs...``, ``X-Debian-PR-*``) goes to
``adapters.debbugs.mail``, everything else to ``adapters.dak_mail``. An empty
list means "nothing known here": the caller keeps the mail as unrecognized.
"""

from __future__ import annotations

from adapters import mailparse
from gateway.event import Event


def parse_mail(raw: bytes) -> list[Event]:
    message = mailparse.parse(raw)
    bts = _bts_adapter()
    if bts is not None and bts.is_bts_mail(message):
        return bts.parse_bts_mail(message, raw)
    from adapters import dak_mail

    return dak_mail.parse_dak_mail(message, raw)


def _bts_adapter():  # type: ignore[no-untyped-def]
    """``adapters.debbugs.mail``, or None in a checkout that does not have it yet."""
    try:
        from adapters.debbugs import mail
    except ModuleNotFoundError as exc:
        if exc.name in ("adapters.debbugs", "adapters.debbugs.mail"):
            return None
        raise
    return mail
