"""Check a received envelope's signature, signer and age: one call for every consumer.

``Verifier.check(envelope)`` returns the signer's identity (certificate CN or
OpenPGP fingerprint) or raises :class:`SignatureError` whose ``reason`` is a
short counter name: ``unsigned``, ``malformed``, ``backend`` (a signature
kind this subscriber has no anchor for), ``unknown-signer``, ``revoked``,
``expired``, ``crl-expired``, ``bad-signature``, ``policy``,
``underspecified``, ``stale``, ``future``. The ZeroMQ subscriber (and so
``busgate tail``) uses it; so can an AMQP consumer or a history recorder, with
the envelope rebuilt from what they received.

Cheap checks come first (shape, age), so a flood of junk costs little.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import TYPE_CHECKING, Any

from gateway import policy as routing
from gateway.signing import first_line, signed_bytes
from gateway.trust import Keyring, TrustError, X509Trust

if TYPE_CHECKING:
    from gateway.config import SigningSettings

#: Longest ``signature`` field accepted, in characters (an RSA-16384 signature in
#: fedmsg's base64 lines is under 3 KiB; an OpenPGP one a few hundred bytes).
MAX_SIGNATURE_CHARS = 16 * 1024
#: Longest ``certificate`` field accepted, in characters (base64 of a PEM certificate).
MAX_CERTIFICATE_CHARS = 64 * 1024
#: Seconds a message's ``timestamp`` may be ahead of this clock before it is refused.
MAX_CLOCK_SKEW = 300.0

REASONS = ("unsigned", "malformed", "backend", "unknown-signer", "revoked", "expired",
           "crl-expired", "bad-signature", "policy", "underspecified", "stale", "future")


class SignatureError(Exception):
    """A message to drop: ``reason`` (one of :data:`REASONS`) and a one-line detail."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def exact_b64decode(text: str) -> bytes:
    """The bytes of ``text``, which must be their one base64 spelling. Why not
    ``b64decode(validate=True)`` alone: it ignores the unused low bits of a last group
    before ``=`` padding, so one signature had up to 16 spellings that all verified (one
    signed message, many signature strings; the tamper matrix accepted one)."""
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw) != text.encode("ascii"):
        raise binascii.Error("not the canonical base64 of its bytes (padding bits set)")
    return raw


class Verifier:
    def __init__(self, *, ca: str = "", crl: str = "", keyring: list[str] | None = None,
                 routing_policy: str = "", nitpicky: bool = False, max_age: float = 86400.0,
                 hash_name: str = "sha1"):
        self.x509 = X509Trust(ca, crl) if ca else None
        self.keyring = Keyring(keyring) if keyring else None
        self.policy = routing.load(routing_policy, nitpicky)
        self.max_age = max_age
        # A deployment that moved to SHA-256 refuses SHA-1 (hash = "sha256" everywhere).
        self._hashes = ("sha256",) if hash_name == "sha256" else ("sha1", "sha256")
        if self.x509 is not None:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding

            self._invalid = InvalidSignature
            self._padding = padding.PKCS1v15()
            self._hash_objects = [hashes.SHA256() if h == "sha256" else hashes.SHA1()  # noqa: S303 - fedmsg
                                  for h in self._hashes]
        if self.keyring is not None:
            from gateway import optional

            self._pgp = optional.require("pysequoia", "OpenPGP signature checks")

    def check(self, envelope: dict[str, Any], *, replayed: bool = False,
              now: float | None = None) -> str:
        """The signer's identity, or :class:`SignatureError`. ``replayed``: the message came
        from a replay answer (asked for), so its age does not matter."""
        crypto = envelope.get("crypto")
        signature = envelope.get("signature")
        if crypto is None and signature is None and "certificate" not in envelope:
            raise SignatureError("unsigned", "the message carries no signature")
        if not isinstance(signature, str) or not signature:
            raise SignatureError("malformed", "signature is not a string")
        if len(signature) > MAX_SIGNATURE_CHARS:
            raise SignatureError("malformed", f"signature over {MAX_SIGNATURE_CHARS} chars")
        now = time.time() if now is None else now
        if not replayed:
            self._fresh(envelope, now)
        if crypto == "x509":
            identity = self._x509(envelope, signature, now)
        elif crypto == "openpgp":
            identity = self._openpgp(envelope, signature)
        else:
            raise SignatureError("backend", f"crypto {str(crypto)[:40]!r} is not x509 or "
                                 "openpgp")
        topic = envelope.get("topic")
        decision = self.policy.decide(topic if isinstance(topic, str) else "", identity)
        if not decision.allowed:
            where = (f"prefix {decision.prefix!r} does not list it" if decision.prefix
                     else "the routing policy covers no prefix of it")
            raise SignatureError(decision.reason, f"{identity!r} may not sign {topic!r}: "
                                 f"{where}")
        return identity

    def _fresh(self, envelope: dict[str, Any], now: float) -> None:
        stamp = envelope.get("timestamp")
        if type(stamp) is not int:
            raise SignatureError("malformed", "timestamp is not an integer")
        if self.max_age and stamp < now - self.max_age:
            raise SignatureError("stale", f"sent {int(now - stamp)} s ago, over the "
                                 f"{self.max_age:g} s window (replay asks for old messages)")
        if stamp > now + MAX_CLOCK_SKEW:
            raise SignatureError("future", f"timestamp {int(stamp - now)} s ahead of this "
                                 "clock")

    def _x509(self, envelope: dict[str, Any], signature: str, now: float) -> str:
        if self.x509 is None:
            raise SignatureError("backend", "x509 signatures are not accepted here "
                                 "(no [signing] ca)")
        certificate = envelope.get("certificate")
        if not isinstance(certificate, str) or not certificate:
            raise SignatureError("malformed", "certificate is not a string")
        if len(certificate) > MAX_CERTIFICATE_CHARS:
            raise SignatureError("malformed", f"certificate over {MAX_CERTIFICATE_CHARS} "
                                 "chars")
        try:  # fedmsg's 76-column lines; nothing else may hide in the fields
            raw = exact_b64decode(signature.replace("\n", ""))
            pem = exact_b64decode(certificate.replace("\n", ""))
        except (binascii.Error, ValueError):
            raise SignatureError("malformed", "signature or certificate is not base64") \
                from None
        try:
            identity, key = self.x509.check(pem, now)
        except TrustError as exc:
            raise SignatureError(exc.reason, str(exc)) from None
        data = self._data(envelope)
        for digest in self._hash_objects:
            try:
                key.verify(raw, data, self._padding, digest)
                return identity
            except self._invalid:
                continue
            except (ValueError, TypeError) as exc:  # e.g. not an RSA key
                raise SignatureError("bad-signature", str(exc)) from None
        raise SignatureError("bad-signature", f"not signed by the key of {identity!r}")

    def _openpgp(self, envelope: dict[str, Any], signature: str) -> str:
        if self.keyring is None:
            raise SignatureError("backend", "openpgp signatures are not accepted here "
                                 "(no [signing] keyring)")
        if "certificate" in envelope:
            raise SignatureError("malformed", "an openpgp message has no certificate field")
        try:
            raw = exact_b64decode(signature)
            sig = self._pgp.Sig.from_bytes(raw)
        except (binascii.Error, ValueError):
            raise SignatureError("malformed", "signature is not base64") from None
        except Exception as exc:
            raise SignatureError("malformed", f"not an OpenPGP signature: "
                                 f"{first_line(exc)}") from None
        body = _packet_body(bytes(sig))
        if not (raw.endswith(body) and len(raw) - len(body) <= MAX_PACKET_HEADER):
            # the parser reads the first packet and ignores what follows: a signature
            # field with bytes appended would still verify (one signed message, many
            # signature strings)
            raise SignatureError("malformed", "bytes after the OpenPGP signature packet")
        issuer = sig.issuer_fingerprint or sig.issuer_key_id
        cert = self.keyring.lookup(issuer) if issuer else None
        if cert is None:
            raise SignatureError("unknown-signer", f"key {issuer} is not in the keyring")
        identity = str(cert.fingerprint).upper()
        if cert.is_revoked:
            raise SignatureError("revoked", f"key {identity} is revoked")
        try:
            result = self._pgp.verify(bytes=self._data(envelope), store=lambda _ids: [cert],
                                      signature=sig)
        except Exception as exc:
            raise SignatureError("bad-signature", f"not a good signature by {identity}: "
                                 f"{first_line(exc)}") from None
        if not result.valid_sigs:
            raise SignatureError("bad-signature", f"not a good signature by {identity}")
        return identity

    @staticmethod
    def _data(envelope: dict[str, Any]) -> bytes:
        try:
            return signed_bytes(envelope)
        except (TypeError, ValueError) as exc:
            raise SignatureError("malformed", f"envelope cannot be encoded: {exc}") from None


#: The longest OpenPGP packet header (RFC 4880 4.2: old or new format, five-octet length).
MAX_PACKET_HEADER = 6


def _packet_body(packet: bytes) -> bytes:
    """The body of one OpenPGP packet as Sequoia writes it (a new-format header, RFC 4880
    4.2.2: one, two or five length octets): what the signature field must end with,
    whichever header format its signer used."""
    if len(packet) < 2:
        return packet
    first = packet[1]
    header = 2 if first < 192 else 3 if first < 224 else 6
    return packet[header:]


def check_settings(conf: SigningSettings) -> None:
    """Load this configuration's signing key and trust anchors once, so ``check-config``
    and ``run`` refuse (exit 2, naming the key) a key or file that cannot be used."""
    from gateway.signing import make_signer

    make_signer(conf)
    if conf.ca or conf.keyring or conf.routing_policy:
        Verifier(ca=conf.ca, crl=conf.crl, keyring=list(conf.keyring),
                 routing_policy=conf.routing_policy, nitpicky=conf.routing_nitpicky)


def from_settings(conf: SigningSettings) -> Verifier | None:
    """The verifier ``[signing]`` asks for, or ``None`` when nothing is to be checked
    (``validate_signatures = false``, or no trust anchor configured)."""
    if not conf.validate_signatures or not (conf.ca or conf.keyring):
        return None
    return Verifier(ca=conf.ca, crl=conf.crl, keyring=list(conf.keyring),
                    routing_policy=conf.routing_policy, nitpicky=conf.routing_nitpicky,
                    max_age=conf.max_age, hash_name=conf.hash)

