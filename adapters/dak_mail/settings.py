"""The ``[dak]`` table: how far dak's signed mails are trusted."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Values of ``dak.signatures``.
SIGNATURE_MODES = ("require", "mark", "ignore")


@dataclass(frozen=True)
class DakSettings:
    #: dak mails whose OpenPGP signature is not a good one by a key in ``keyring``:
    #: ``require`` (quarantined), ``mark`` (published, ``signature.status`` says why) or
    #: ``ignore`` (not checked).
    signatures: str = "require"
    #: Keyring files (gpgv format) holding the key dak signs its mails with.
    keyring: list[str] = field(default_factory=list)
    #: The gpgv program (name on PATH or absolute path).
    gpgv: str = "gpgv"
    #: Seconds gpgv may take for one mail.
    verify_timeout: float = 10.0
