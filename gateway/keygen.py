"""Make the keys a signed bus needs (``busgate keys``): a small CA with its CRL, a
publisher certificate, an OpenPGP key; revoke a certificate. Files are written
new (a secret key 0600) and never overwritten."""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path

from gateway import x509compat
from gateway.errors import ConfigError

#: RSA modulus size of made keys (fedmsg's signatures are RSA PKCS#1 v1.5).
RSA_BITS = 2048


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600 if secret else 0o644)
    except FileExistsError:
        raise ConfigError(f"{path} exists; not overwriting it") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(directory: str | Path, cn: str, days: int = 3650) -> tuple[Path, Path, Path]:
    """``ca.crt``, ``ca.key`` and an empty ``crl.pem`` in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    out = Path(directory)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    paths = out / "ca.crt", out / "ca.key", out / "crl.pem"
    _write(paths[1], key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), secret=True)
    _write(paths[0], cert.public_bytes(serialization.Encoding.PEM))
    _write(paths[2], _crl(cert, key, []))
    return paths


def _load_ca(ca_dir: str | Path):  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_dir = Path(ca_dir)
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{ca_dir} holds no CA made by `busgate keys ca`: {exc}") from None
    return cert, key


def _crl(ca_cert, ca_key, revoked: list, days: int = 30) -> bytes:  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now - datetime.timedelta(minutes=5))
               .next_update(now + datetime.timedelta(days=days)))
    for item in revoked:
        builder = builder.add_revoked_certificate(item)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def make_cert(directory: str | Path, ca_dir: str | Path, cn: str,
              days: int = 730) -> tuple[Path, Path]:
    """``<cn>.crt`` and ``<cn>.key`` for a publisher, issued by the CA in ``ca_dir``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    if not cn or "/" in cn or cn.startswith("."):
        raise ConfigError(f"{cn!r} cannot name a certificate file")
    ca_cert, ca_key = _load_ca(ca_dir)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    out = Path(directory)
    paths = out / f"{cn}.crt", out / f"{cn}.key"
    _write(paths[1], key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()), secret=True)
    _write(paths[0], cert.public_bytes(serialization.Encoding.PEM))
    return paths


def revoke(ca_dir: str | Path, cert_paths: list[str]) -> Path:
    """Add certificates to the CA's ``crl.pem`` (rewritten in place, atomically)."""
    from cryptography import x509

    ca_dir = Path(ca_dir)
    ca_cert, ca_key = _load_ca(ca_dir)
    crl_path = ca_dir / "crl.pem"
    entries = list(x509.load_pem_x509_crl(crl_path.read_bytes())) if crl_path.exists() else []
    known = {e.serial_number for e in entries}
    for path in cert_paths:
        try:
            cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is not a PEM certificate: {exc}") from None
        if cert.issuer != ca_cert.subject:
            raise ConfigError(f"{path} was not issued by the CA in {ca_dir}")
        if cert.serial_number not in known:
            entries.append(x509.RevokedCertificateBuilder()
                           .serial_number(cert.serial_number)
                           .revocation_date(_now()).build())
            known.add(cert.serial_number)
    tmp = crl_path.with_suffix(".pem.tmp")
    tmp.unlink(missing_ok=True)
    _write(tmp, _crl(ca_cert, ca_key, entries))
    os.replace(tmp, crl_path)
    return crl_path


def make_openpgp(directory: str | Path, name: str, uid: str) -> tuple[Path, Path, str]:
    """``<name>.key`` (secret, armored) and ``<name>.pub.asc``; returns the fingerprint."""
    from gateway import optional

    pysequoia = optional.require("pysequoia", "An OpenPGP key")

    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"{name!r} cannot name a key file")
    tsk = pysequoia.Tsk.generate(uid)
    cert = tsk.extract_certificate()
    out = Path(directory)
    paths = out / f"{name}.key", out / f"{name}.pub.asc"
    _write(paths[0], str(tsk).encode(), secret=True)
    _write(paths[1], str(cert).encode())
    return paths[0], paths[1], cert.fingerprint.upper()


def describe(path: str) -> list[str]:
    """One line per identity in a certificate, CRL or keyring file."""
    data = Path(path).read_bytes()
    if b"BEGIN CERTIFICATE" in data:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.x509.oid import NameOID

        lines = []
        for cert in x509compat.load_pem_certificates(data):
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
            lines.append(f"x509 CN={names[0].value if names else ''} serial="
                         f"{cert.serial_number:x} sha256={digest.upper()} "
                         f"until={x509compat.utc(cert, 'not_valid_after'):%Y-%m-%d}")
        return lines
    if b"BEGIN X509 CRL" in data:
        from cryptography import x509

        crl = x509.load_pem_x509_crl(data)
        return [f"crl issuer={crl.issuer.rfc4514_string()} revoked="
                f"{','.join(f'{r.serial_number:x}' for r in crl) or '-'} "
                f"next_update={x509compat.utc(crl, 'next_update'):%Y-%m-%d}"]
    from gateway import optional
    from gateway.signing import first_line

    pysequoia = optional.require("pysequoia", "Reading an OpenPGP keyring")

    try:
        certs = pysequoia.Cert.split_bytes(data)
    except Exception as exc:
        raise ConfigError(f"{path} is no certificate, CRL or keyring: {first_line(exc)}") \
            from None
    return [f"openpgp {c.fingerprint.upper()} {'; '.join(str(u) for u in c.user_ids)}"
            f"{' (revoked)' if c.is_revoked else ''}" for c in certs]
