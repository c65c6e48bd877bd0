"""The dak source: archive mail (accepted, rejected, new, removals...) -> ``dak.*``.

dak mail arrives through the mail front (``busgate mail``, the SMTP listener), which
routes every mail to the mail-fed source that claims it first; dak asks last and
takes the rest (a mail it does not know becomes no event). It also declares the
``mail`` spool kind, parsed by that front (:mod:`adapters.mail`).
"""

from __future__ import annotations

import os

from adapters.dak_mail.settings import SIGNATURE_MODES, DakSettings
from gateway.errors import ConfigError
from gateway.sources import MailSpec, Source

TYPE_CHECKING = False
if TYPE_CHECKING:
    from email.message import Message

    from gateway.event import Event


def validate(section: DakSettings, settings: object) -> None:
    if section.signatures not in SIGNATURE_MODES:
        raise ConfigError(f"must be one of {', '.join(SIGNATURE_MODES)}",
                          key="dak.signatures")
    for keyring in section.keyring if section.signatures != "ignore" else ():
        if not os.path.isfile(keyring):
            raise ConfigError(f"keyring file {keyring!r} does not exist", key="dak.keyring")
    if not section.verify_timeout > 0:
        raise ConfigError(f"must be greater than 0, not {section.verify_timeout}",
                          key="dak.verify_timeout")


def claims(message: Message) -> bool:
    """Every mail no other source claimed: dak's classifier decides what it knows."""
    return True


def parse(message: Message, raw: bytes, settings: object | None) -> list[Event]:
    """``settings`` None (library use): translation only, the signature is not checked."""
    from adapters.dak_mail import parse_dak_mail
    from adapters.dak_mail.signature import Trust

    trust = None
    if settings is not None:
        dak: DakSettings = settings.section("dak")  # type: ignore[attr-defined]
        trust = Trust(mode=dak.signatures, keyrings=tuple(dak.keyring), gpgv=dak.gpgv,
                      timeout=dak.verify_timeout)
    return parse_dak_mail(message, raw, trust)


SOURCE = Source(
    name="dak",
    section="dak",
    settings=DakSettings,
    validate=validate,
    spool_kinds={"mail": "adapters.mail:parse_mail"},
    mail=MailSpec(claims="adapters.dak_mail.source:claims",
                  parse="adapters.dak_mail.source:parse", priority=1000),
    messages="adapters.dak_mail.messages:TYPES",
    description="archive mail from dak (accepts, rejects, NEW, removals)",
)
