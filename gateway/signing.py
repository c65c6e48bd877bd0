"""Sign envelopes.

Signing is the last step of building an envelope: every other field
(``seq_id``, ``publisher``, ``publisher_epoch``, ``headers``) is set first, so
nothing downstream ever has to add a field to a signed message, and the stored
envelope (what replay sends) carries its original signature.

What is signed is :func:`signed_bytes`: the canonical JSON of the whole
envelope minus ``signature`` and ``certificate``, ``crypto`` included.

* ``x509`` is fedmsg 1.1.7's format byte for byte: ``crypto = "x509"``, RSA
  PKCS#1 v1.5 over SHA-1 (SHA-256 as an option, which stock fedmsg cannot
  check), ``signature`` = base64 of it and ``certificate`` = base64 of the PEM,
  both cut into 76-character lines ending in a newline. Unlike fedmsg, which
  re-reads the key for every message (~50 ms), the key is loaded once.
* ``openpgp``: ``crypto = "openpgp"``, ``signature`` = base64 of a binary
  detached OpenPGP signature (``gpg --verify`` / ``sqv`` accept it). Made
  in-process by pysequoia (Sequoia-PGP): ~40 µs a signature, where a gpg
  subprocess per message costs milliseconds. fedmsg's ``gpg`` backend signed
  only ``msg``; this one covers the whole envelope.

The libraries are imported only by the backend that needs them.
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING, Any, Protocol

from gateway import envelope as env
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from gateway.config import SigningSettings

#: Width of the base64 lines of fedmsg's ``signature`` and ``certificate`` (M2Crypto's).
FEDMSG_LINE = 76


class Signer(Protocol):
    name: str

    def sign(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """Return ``envelope`` with ``crypto`` and the signature fields added."""
        ...


def signed_bytes(envelope: dict[str, Any]) -> bytes:
    """The bytes a signature covers: canonical JSON of all but the signature fields."""
    return env.canonical_json({k: v for k, v in envelope.items()
                               if k not in env.SIGNATURE_FIELDS}).encode()


def fedmsg_lines(data: bytes) -> str:
    """Base64 of ``data`` cut every 76 characters, with a final newline (fedmsg's form)."""
    text = base64.b64encode(data).decode("ascii")
    return "\n".join(text[i:i + FEDMSG_LINE] for i in range(0, len(text), FEDMSG_LINE)) + "\n"


#: Threads an x509 signer uses for a batch of envelopes (one per core).
SIGNING_THREADS = os.cpu_count() or 1

_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """This process's signing threads (made again after a fork: threads do not survive).
    Imported here: an unsigned ``busgate publish`` need not load the thread pool."""
    from concurrent.futures import ThreadPoolExecutor

    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(SIGNING_THREADS,
                                                 thread_name_prefix="busgate-sign"))
    return _POOL[1]


class NullSigner:
    """Leaves envelopes unsigned (``[signing] backend = "none"``)."""

    name = "none"

    def sign(self, envelope: dict[str, Any]) -> dict[str, Any]:
        return envelope


class X509Signer:
    """fedmsg-compatible RSA signatures with a key parsed once."""

    name = "x509"

    def __init__(self, cert_path: str, key_path: str, hash_name: str = "sha1"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        cert_pem = _read(cert_path, "signing.cert")
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise ConfigError(f"{cert_path} is not a PEM certificate: {exc}",
                              key="signing.cert") from None
        try:
            key = serialization.load_pem_private_key(_read(key_path, "signing.key"),
                                                     password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{key_path} is not an unencrypted PEM private key: {exc}",
                              key="signing.key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(f"{key_path}: x509 signing needs an RSA key (fedmsg's "
                              "PKCS#1 v1.5)", key="signing.key")
        if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise ConfigError(f"{key_path} is not the key of {cert_path}", key="signing.key")
        self._key = key
        self._padding = padding.PKCS1v15()
        self._hash = hashes.SHA256() if hash_name == "sha256" else hashes.SHA1()  # noqa: S303 - fedmsg
        # fedmsg sends the certificate re-encoded as PEM, whatever the file's layout
        self._certificate = fedmsg_lines(cert.public_bytes(serialization.Encoding.PEM))

    def sign_many(self, envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Sign a batch on :data:`SIGNING_THREADS` threads (OpenSSL's RSA runs without
        the GIL: one RSA-2048 signature is most of a millisecond, and cores add up)."""
        if len(envelopes) < 2 * SIGNING_THREADS or SIGNING_THREADS < 2:
            return [self.sign(e) for e in envelopes]
        step = 64  # a future per 64 envelopes, not per envelope
        parts = _pool().map(self._sign_list, [envelopes[i:i + step]
                                              for i in range(0, len(envelopes), step)])
        return [e for part in parts for e in part]

    def _sign_list(self, envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.sign(e) for e in envelopes]

    def sign(self, envelope: dict[str, Any]) -> dict[str, Any]:
        envelope.pop("signature", None)
        envelope.pop("certificate", None)
        envelope["crypto"] = "x509"
        raw = self._key.sign(signed_bytes(envelope), self._padding, self._hash)
        envelope["signature"] = fedmsg_lines(raw)
        envelope["certificate"] = self._certificate
        return envelope


class OpenPGPSigner:
    """Detached OpenPGP signatures made in-process with the secret key loaded once."""

    name = "openpgp"

    def __init__(self, key_path: str):
        from gateway import optional

        pysequoia = optional.require("pysequoia", "OpenPGP signing")

        _read(key_path, "signing.key")  # a clear error for a missing or unreadable file
        try:
            tsk = pysequoia.Tsk.from_file(key_path)
            self._signer = tsk.signer()
        except Exception as exc:  # pysequoia raises plain exceptions with a backtrace
            raise ConfigError(f"{key_path} holds no usable OpenPGP signing key: "
                              f"{first_line(exc)}", key="signing.key") from None
        self.fingerprint = tsk.extract_certificate().fingerprint.upper()
        self._sign = pysequoia.sign
        self._mode = pysequoia.SignatureMode.DETACHED

    def sign(self, envelope: dict[str, Any]) -> dict[str, Any]:
        envelope.pop("signature", None)
        envelope.pop("certificate", None)
        envelope["crypto"] = "openpgp"
        raw = self._sign(self._signer, signed_bytes(envelope), mode=self._mode, armor=False)
        envelope["signature"] = base64.b64encode(raw).decode("ascii")
        return envelope


def first_line(exc: BaseException) -> str:
    """pysequoia's errors carry a Rust backtrace after the message: keep the message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_KEY_FILE_BYTES + 1)[:MAX_KEY_FILE_BYTES]
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key=key) from None


#: Most bytes read from a certificate or secret key file (they are a few KiB).
MAX_KEY_FILE_BYTES = 1024 * 1024


def make_signer(settings: SigningSettings | str) -> Signer:
    """The signer ``[signing]`` asks for; ``ConfigError`` names the key that is wrong."""
    backend = settings if isinstance(settings, str) else settings.backend
    if backend == "none":
        return NullSigner()
    if isinstance(settings, str):
        raise ConfigError(f"the {backend} signing backend needs its [signing] keys",
                          key="signing.backend")
    if backend == "x509":
        return X509Signer(settings.cert, settings.key, settings.hash)
    if backend == "openpgp":
        return OpenPGPSigner(settings.key)
    raise ConfigError(f"unknown signing backend {backend!r} (none, x509, openpgp)",
                      key="signing.backend")
