"""Trust anchors a subscriber checks signatures against: a CA with its CRL (X.509) or
a keyring (OpenPGP).

Both are read once and read again when their files change (looked at no more
than every :data:`RELOAD_CHECK_SECONDS`), so revoking a publisher is: publish
a new CRL, or remove (or revoke) the key in the keyring file; running
subscribers follow within seconds, with no restart.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from gateway import x509compat
from gateway.errors import ConfigError

log = logging.getLogger(__name__)

#: Seconds between looks at whether a CA, CRL or keyring file changed.
RELOAD_CHECK_SECONDS = 5.0
#: Largest CA bundle or CRL read, in bytes.
MAX_CA_BYTES = 16 * 1024 * 1024
#: Largest keyring file read, in bytes (Debian's keyrings are tens of MiB).
MAX_KEYRING_BYTES = 256 * 1024 * 1024
#: Publisher certificates whose parse and chain check are remembered (LRU).
CERT_CACHE = 256


class TrustError(Exception):
    """A signer the anchors do not vouch for; ``reason`` is a counter name."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _read(path: str, limit: int, key: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key=key) from None
    if len(data) > limit:
        raise ConfigError(f"{path} is larger than {limit} bytes", key=key)
    return data


def _stamp(paths: list[str]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((0, 0, 0))
    return tuple(out)


class _Reloading:
    """Calls :meth:`_load` again when one of ``paths`` changed (checked now and then)."""

    def __init__(self, paths: list[str]):
        self._paths = paths
        self._stamp = _stamp(paths)
        self._checked = time.monotonic()
        self._load()

    def _load(self) -> None:
        raise NotImplementedError

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_CHECK_SECONDS:
            return
        self._checked = now
        stamp = _stamp(self._paths)
        if stamp == self._stamp and not force:
            return
        try:
            self._load()
        except ConfigError as exc:  # keep the anchors we had rather than trust nothing
            log.error("trust anchors not reloaded, keeping the previous ones: %s", exc)
            return
        self._stamp = stamp
        log.info("reloaded trust anchors from %s", ", ".join(self._paths))


@dataclass(frozen=True)
class _Leaf:
    cert: Any
    public_key: Any
    cn: str
    issuer: Any  # the CA certificate that issued it
    not_before: float
    not_after: float


class X509Trust(_Reloading):
    """Certificates issued directly by a CA of the bundle, within their validity, not
    listed in that CA's CRL."""

    def __init__(self, ca: str, crl: str = ""):
        self.ca_path, self.crl_path = ca, crl
        self._leaves: OrderedDict[str, _Leaf] = OrderedDict()
        super().__init__([p for p in (ca, crl) if p])

    def _load(self) -> None:
        from cryptography import x509

        data = _read(self.ca_path, MAX_CA_BYTES, "signing.ca")
        try:
            cas = x509compat.load_pem_certificates(data)
        except ValueError as exc:
            raise ConfigError(f"{self.ca_path} holds no PEM certificate: {exc}",
                              key="signing.ca") from None
        revoked: dict[bytes, set[int]] = {}
        next_update: float | None = None
        if self.crl_path:
            raw = _read(self.crl_path, MAX_CA_BYTES, "signing.crl")
            try:
                crl = (x509.load_pem_x509_crl(raw) if raw.lstrip().startswith(b"-----")
                       else x509.load_der_x509_crl(raw))
            except ValueError as exc:
                raise ConfigError(f"{self.crl_path} is not a CRL: {exc}",
                                  key="signing.crl") from None
            issuer = next((ca for ca in cas if ca.subject == crl.issuer
                           and crl.is_signature_valid(ca.public_key())), None)
            if issuer is None:
                raise ConfigError(f"{self.crl_path} is not signed by a CA of {self.ca_path}",
                                  key="signing.crl")
            revoked[issuer.subject.public_bytes()] = {r.serial_number for r in crl}
            crl_next = x509compat.utc(crl, "next_update")
            if crl_next is not None:
                next_update = crl_next.timestamp()
        self._cas = cas
        self._revoked = revoked
        self._crl_next_update = next_update
        self._leaves.clear()

    def check(self, certificate_pem: bytes, now: float) -> tuple[str, Any]:
        """``(CN, public key)`` of a certificate the anchors vouch for; else TrustError."""
        self.refresh()
        key = certificate_pem.decode("ascii", "replace")
        leaf = self._leaves.get(key)
        if leaf is None:
            leaf = self._chain(certificate_pem)
            self._leaves[key] = leaf
            if len(self._leaves) > CERT_CACHE:
                self._leaves.popitem(last=False)
        else:
            self._leaves.move_to_end(key)
        if not leaf.not_before <= now <= leaf.not_after:
            raise TrustError("expired", f"certificate of {leaf.cn!r} is not valid now")
        serials = self._revoked.get(leaf.issuer.subject.public_bytes())
        if serials is not None:
            if self._crl_next_update is not None and now > self._crl_next_update:
                raise TrustError("crl-expired", f"the CRL {self.crl_path} is past its "
                                 "next update: revocations cannot be known")
            if leaf.cert.serial_number in serials:
                raise TrustError("revoked", f"certificate of {leaf.cn!r} (serial "
                                 f"{leaf.cert.serial_number:x}) is revoked")
        return leaf.cn, leaf.public_key

    def _chain(self, certificate_pem: bytes) -> _Leaf:
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.x509.oid import NameOID

        try:
            cert = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError as exc:
            raise TrustError("malformed", f"certificate is not PEM: {exc}") from None
        if cert.public_bytes(serialization.Encoding.PEM) != certificate_pem:
            # what fedmsg and busgate send; other bytes around it are not signed: refuse them
            raise TrustError("malformed", "certificate field is not exactly one PEM "
                             "certificate")
        issuer = None
        for ca in self._cas:
            if ca.subject != cert.issuer:
                continue
            try:
                x509compat.verify_directly_issued_by(cert, ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            issuer = ca
            break
        if issuer is None:
            raise TrustError("unknown-signer", "certificate is not issued by a trusted CA")
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(names[0].value) if names else ""
        return _Leaf(cert, cert.public_key(), cn, issuer,
                     _timestamp(cert, "not_valid_before"), _timestamp(cert, "not_valid_after"))


def _timestamp(cert: Any, name: str) -> float:
    when = x509compat.utc(cert, name)
    assert when is not None  # a certificate's validity always has both ends
    return when.timestamp()


class Keyring(_Reloading):
    """OpenPGP certificates by primary and subkey fingerprint / key id."""

    def __init__(self, paths: list[str]):
        super().__init__(list(paths))

    def _load(self) -> None:
        from gateway import optional

        pysequoia = optional.require("pysequoia", "An OpenPGP keyring")
        from pysequoia import packet

        from gateway.signing import first_line

        index: dict[str, Any] = {}
        for path in self._paths:
            data = _read(path, MAX_KEYRING_BYTES, "signing.keyring")
            try:
                certs = pysequoia.Cert.split_bytes(data)
            except Exception as exc:
                raise ConfigError(f"{path} is not an OpenPGP keyring: {first_line(exc)}",
                                  key="signing.keyring") from None
            for cert in certs:
                for item in packet.PacketPile.from_bytes(bytes(cert)):
                    for ident in (item.fingerprint, item.key_id):
                        if ident:
                            index[ident.upper()] = cert
        self._index = index

    def lookup(self, ident: str) -> Any | None:
        self.refresh()
        return self._index.get(ident.replace(" ", "").upper())

    def fingerprints(self) -> list[str]:
        return sorted({c.fingerprint.upper() for c in self._index.values()})
