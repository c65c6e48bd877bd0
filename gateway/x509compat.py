"""The few ``cryptography`` calls busgate needs that are newer than Debian 12's 38.0.

``load_pem_x509_certificates`` came in 39, ``verify_directly_issued_by`` in 40 and the
timezone-aware ``*_utc`` dates in 42. Each function here calls the library's own when it
has it, so a newer ``cryptography`` (the venv's) runs exactly the library's code; only on
an older one does the equivalent below run (tests/test_signing.py passes on both).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def load_pem_certificates(data: bytes) -> list[Any]:
    """Every certificate of a PEM bundle; ValueError when it holds none."""
    from cryptography import x509

    if hasattr(x509, "load_pem_x509_certificates"):
        return x509.load_pem_x509_certificates(data)
    return _load_pem_certificates(data)


def _load_pem_certificates(data: bytes) -> list[Any]:
    from cryptography import x509

    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise ValueError("no PEM certificate found")
    return [x509.load_pem_x509_certificate(block) for block in blocks]


def utc(obj: Any, name: str) -> dt.datetime | None:
    """``obj.<name>_utc`` (e.g. not_valid_after), from the naive UTC value before 42."""
    aware = getattr(obj, f"{name}_utc", None)
    if aware is not None or hasattr(obj.__class__, f"{name}_utc"):
        return aware
    naive = getattr(obj, name)
    return None if naive is None else naive.replace(tzinfo=dt.UTC)


def verify_directly_issued_by(cert: Any, ca: Any) -> None:
    """Raise ValueError, TypeError or InvalidSignature unless ``ca`` signed ``cert``."""
    if hasattr(cert, "verify_directly_issued_by"):
        cert.verify_directly_issued_by(ca)
    else:
        _verify_directly_issued_by(cert, ca)


def _verify_directly_issued_by(cert: Any, ca: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

    if cert.issuer != ca.subject:
        raise ValueError("the certificate's issuer is not the CA's subject")
    key, signature, data = ca.public_key(), cert.signature, cert.tbs_certificate_bytes
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), cert.signature_hash_algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(cert.signature_hash_algorithm))
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        key.verify(signature, data)
    else:
        raise TypeError(f"unsupported CA key type {type(key).__name__}")
