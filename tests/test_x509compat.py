"""gateway.x509compat's own code (what runs on Debian 12's cryptography 38) agrees with the
library's newer calls where both exist (the venv), and works alone on Debian 12's 38."""

import datetime as dt

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway import keygen, x509compat


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    (base / "ca").mkdir()
    (base / "other").mkdir()
    keygen.make_ca(base / "ca", "ca.example.org")
    keygen.make_ca(base / "other", "other.example.org")
    cert_path = keygen.make_cert(base, base / "ca", "leaf.example.org")[0]
    return base, cert_path


def load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_a_bundle_loads_as_the_library_loads_it(pki):
    base, _ = pki
    bundle = (base / "ca/ca.crt").read_bytes() + b"\n" + (base / "other/ca.crt").read_bytes()
    ours = x509compat._load_pem_certificates(bundle)
    assert [c.subject.rfc4514_string() for c in ours] == ["CN=ca.example.org",
                                                         "CN=other.example.org"]
    assert x509compat.load_pem_certificates(bundle) == ours
    with pytest.raises(ValueError):
        x509compat._load_pem_certificates(b"no certificate here")


def test_issuer_check_agrees_with_the_library(pki):
    base, cert_path = pki
    leaf, ca, other = load(cert_path), load(base / "ca/ca.crt"), load(base / "other/ca.crt")
    x509compat._verify_directly_issued_by(leaf, ca)
    x509compat.verify_directly_issued_by(leaf, ca)
    for check in (x509compat._verify_directly_issued_by, x509compat.verify_directly_issued_by):
        with pytest.raises(ValueError):
            check(leaf, other)  # another CA's name


@pytest.mark.parametrize("make_key", [lambda: ec.generate_private_key(ec.SECP256R1()),
                                      ed25519.Ed25519PrivateKey.generate])
def test_ec_and_ed25519_issuers_and_a_wrong_signature(make_key):
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)  # naive UTC: what 38 takes too
    ca_key, impostor = make_key(), make_key()
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "ca")])
    digest = None if isinstance(ca_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()

    def build(signer):
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(ca_key.public_key()).serial_number(1)
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
                .sign(signer, digest))

    ca, fake = build(ca_key), build(impostor)
    x509compat._verify_directly_issued_by(ca, ca)
    with pytest.raises(InvalidSignature):
        x509compat._verify_directly_issued_by(fake, ca)
    with pytest.raises(InvalidSignature):
        x509compat.verify_directly_issued_by(fake, ca)


def test_dates_are_the_libraries_utc_dates(pki):
    leaf = load(pki[1])

    after = x509compat.utc(leaf, "not_valid_after")
    assert after.tzinfo is dt.UTC and 700 <= (after - dt.datetime.now(dt.UTC)).days <= 730

    class Old:  # what cryptography 38 offers: naive UTC datetimes only
        not_valid_after = after.replace(tzinfo=None)
        next_update = None

    assert x509compat.utc(Old(), "not_valid_after") == after
    assert x509compat.utc(Old(), "next_update") is None
