"""Keys for the signing tests, made once per module with ``gateway.keygen`` (the code
``busgate keys`` runs): a CA with a CRL, a publisher certificate, a revoked one, one
from an unknown CA, and OpenPGP keys (a known one, a revoked one, an unknown one)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import envelope as env
from gateway import keygen

TOPIC = "org.debian.dev.dak.upload.accepted"
PUBLISHER_CN = "dak.example.org"
ROGUE_CN = "rogue.example.org"


@dataclass
class Pki:
    root: Path
    ca: Path
    crl: Path
    cert: Path
    key: Path
    revoked_cert: Path
    revoked_key: Path
    stranger_cert: Path
    stranger_key: Path
    rogue_cert: Path
    rogue_key: Path
    pgp_key: Path
    pgp_pub: Path
    pgp_fpr: str
    pgp_revoked_key: Path
    pgp_stranger_key: Path
    keyring: Path
    policy: Path


def make_pki(root: Path) -> Pki:
    import pysequoia

    ca_dir = root / "ca"
    ca, _, crl = keygen.make_ca(ca_dir, "test CA")
    cert, key = keygen.make_cert(root / "pub", ca_dir, PUBLISHER_CN)
    revoked_cert, revoked_key = keygen.make_cert(root / "pub", ca_dir, "revoked.example.org")
    rogue_cert, rogue_key = keygen.make_cert(root / "pub", ca_dir, ROGUE_CN)
    keygen.revoke(ca_dir, [str(revoked_cert)])
    other = root / "other-ca"
    keygen.make_ca(other, "test CA")  # same name, other key: must not be trusted
    stranger_cert, stranger_key = keygen.make_cert(root / "other", other, PUBLISHER_CN)
    pgp_key, pgp_pub, pgp_fpr = keygen.make_openpgp(root / "pgp", "dak", "dak <dak@example.org>")
    revoked_pgp, _, revoked_fpr = keygen.make_openpgp(root / "pgp", "old",
                                                                "old <old@example.org>")
    stranger_pgp, _, _ = keygen.make_openpgp(root / "pgp", "stranger", "x <x@example.org>")
    tsk = pysequoia.Tsk.from_file(str(revoked_pgp))
    old = tsk.extract_certificate()
    revoked = pysequoia.Cert.from_bytes(bytes(old) + bytes(old.revoke(tsk.certifier())))
    keyring = root / "pgp" / "keyring.gpg"
    keyring.write_bytes(bytes(pysequoia.Cert.from_file(str(pgp_pub))) + bytes(revoked))
    policy = root / "policy.toml"
    policy.write_text(
        "[routing]\n"
        f'"org.debian.dev.dak" = ["{PUBLISHER_CN}", "revoked.example.org", "{pgp_fpr}", '
        f'"{revoked_fpr}"]\n'
        f'"org.debian.dev.busgate" = ["{PUBLISHER_CN}", "{pgp_fpr}"]\n'
        f'"org.debian.dev.myapp" = ["{PUBLISHER_CN}", "{pgp_fpr}"]\n'
        f'"org.debian.dev.git" = ["{ROGUE_CN}"]\n')
    return Pki(root, ca, crl, cert, key, revoked_cert, revoked_key, stranger_cert,
               stranger_key, rogue_cert, rogue_key, pgp_key, pgp_pub, pgp_fpr, revoked_pgp,
               stranger_pgp, keyring, policy)


def envelope(seq_id: int = 7, topic: str = TOPIC, when: int | None = None,
             **extra: Any) -> dict[str, Any]:
    """A busgate envelope as the outbox makes it (headers included), unsigned."""
    stamp = int(time.time()) if when is None else when
    out = env.build(topic=topic, body={"source": "hebcal", "version": "4.31-1",
                                       "note": "J\u00f6rg / caf\u00e9", "n": [1, 2.5, None]},
                    msg_id=env.msg_id_for(f"k{seq_id}"), timestamp=stamp, i=seq_id,
                    username="dak", seq_id=seq_id, publisher="busgate",
                    publisher_epoch="e" * 32)
    out["headers"] = {"fedora_messaging_schema": "busgate.dak.upload.accepted.v1",
                      "fedora_messaging_severity": 20, "sent-at": "2026-12-01T00:00:00+00:00",
                      "fedora_messaging_user_dak": True}
    out.update(extra)
    return out
