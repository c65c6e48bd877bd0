"""Route one RFC 822 mail to the adapter that knows its sender.

The mail is parsed once here; bug tracker mail (``X-Loop: owner@bugs...``,
``X-Debian-PR-*``) goes to ``adapters.debbugs.mail``, everything else to
``adapters.dak_mail``. An empty list means "nothing known here": the caller
keeps the mail as unrecognized.
"""

from __future__ import annotations

from email import policy
from email.parser import BytesParser

from gateway.event import Event


def parse_mail(raw: bytes) -> list[Event]:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    from adapters.debbugs import mail as bts

    if bts.is_bts_mail(message):
        return bts.parse_bts_mail(message, raw)
    from adapters import dak_mail

    return dak_mail.parse_dak_mail(message, raw)
