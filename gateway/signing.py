"""Sign and verify envelopes.

Signing is the last step of building an envelope: every other field
(``seq_id`` and ``publisher`` included) is set first, so nothing downstream
ever has to add a field to a signed message. Backends (``x509`` for fedmsg
compatibility, ``ed25519``) plug in behind :class:`Signer`; ``none`` is the
default on a single machine.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.errors import ConfigError


class Signer(Protocol):
    name: str

    def sign(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """Return ``envelope`` with ``crypto`` and the signature fields added."""
        ...


class NullSigner:
    """Leaves envelopes unsigned (``[signing] backend = "none"``)."""

    name = "none"

    def sign(self, envelope: dict[str, Any]) -> dict[str, Any]:
        return envelope


def make_signer(backend: str) -> Signer:
    if backend == "none":
        return NullSigner()
    raise ConfigError(
        f"signing backend {backend!r} is not available in this version (use 'none')",
        key="signing.backend",
    )
