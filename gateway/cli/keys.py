"""``busgate keys``: make a CA, a publisher certificate or an OpenPGP key, revoke a
certificate, print fingerprints, check the routing policy."""

from __future__ import annotations

import argparse
import sys

HELP = "make and inspect signing keys; check the routing policy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ca = sub.add_parser("ca", help="make a CA (ca.crt, ca.key, empty crl.pem) in DIR")
    ca.add_argument("dir")
    ca.add_argument("--cn", default="busgate CA")
    ca.add_argument("--days", type=int, default=3650)
    x509 = sub.add_parser("x509", help="make a publisher certificate CN.crt/CN.key in DIR")
    x509.add_argument("dir")
    x509.add_argument("--ca", required=True, metavar="CA_DIR")
    x509.add_argument("--cn", required=True, help="the identity the routing policy names")
    x509.add_argument("--days", type=int, default=730)
    revoke = sub.add_parser("revoke", help="add certificates to the CA's crl.pem")
    revoke.add_argument("certs", nargs="+", metavar="CERT")
    revoke.add_argument("--ca", required=True, metavar="CA_DIR")
    pgp = sub.add_parser("openpgp", help="make an OpenPGP key NAME.key/NAME.pub.asc in DIR")
    pgp.add_argument("dir")
    pgp.add_argument("--name", required=True, help="file name stem")
    pgp.add_argument("--uid", required=True, help='user id, e.g. "busgate <bus@example.org>"')
    show = sub.add_parser("show", help="print the identities in certificate/CRL/keyring files")
    show.add_argument("files", nargs="+", metavar="FILE")
    policy = sub.add_parser("policy", help="check [signing] routing_policy (or --file)")
    policy.add_argument("--file", help="policy file (default: signing.routing_policy)")
    policy.add_argument("--topic", help="with --signer: would this signer be allowed?")
    policy.add_argument("--signer", help="certificate CN or OpenPGP fingerprint")


def run(args: argparse.Namespace) -> int:
    from gateway import keygen

    if args.action == "ca":
        for path in keygen.make_ca(args.dir, args.cn, args.days):
            print(path)
        return 0
    if args.action == "x509":
        crt, key = keygen.make_cert(args.dir, args.ca, args.cn, args.days)
        print(crt)
        print(key)
        print("\n".join(keygen.describe(str(crt))))
        return 0
    if args.action == "revoke":
        crl = keygen.revoke(args.ca, args.certs)
        print("\n".join(keygen.describe(str(crl))))
        return 0
    if args.action == "openpgp":
        key, pub, fingerprint = keygen.make_openpgp(args.dir, args.name, args.uid)
        print(key)
        print(pub)
        print(f"openpgp {fingerprint} {args.uid}")
        return 0
    if args.action == "show":
        for path in args.files:
            try:
                print("\n".join(f"{path}: {line}" for line in keygen.describe(path)))
            except OSError as exc:
                print(f"busgate keys: {path}: {exc.strerror}", file=sys.stderr)
                return 1
        return 0
    return _policy(args)


def _policy(args: argparse.Namespace) -> int:
    from gateway import policy
    from gateway.cli import load_settings
    from gateway.trust import Keyring

    settings = load_settings(args)
    conf = settings.signing
    path = args.file or conf.routing_policy
    if not path:
        print("busgate keys: no routing policy (set signing.routing_policy or --file)",
              file=sys.stderr)
        return 2
    rules = policy.load(path, conf.routing_nitpicky)
    known = set(Keyring(list(conf.keyring)).fingerprints()) if conf.keyring else None
    problems = 0
    for prefix in sorted(rules.rules):
        for ident in sorted(rules.rules[prefix]):
            note = ""
            if (policy.normalise(ident) != ident or _is_fpr(ident)) and \
                    known is not None and ident not in known:
                note = "  # not in the keyring"
                problems += 1
            print(f"{prefix} {ident}{note}")
    print(f"{len(rules.rules)} prefixes; topics outside them are "
          f"{'refused' if rules.nitpicky else 'allowed to any valid signer'}")
    if args.topic:
        decision = rules.decide(args.topic, args.signer or "")
        verdict = "allowed" if decision.allowed else f"refused ({decision.reason})"
        print(f"{args.topic} signed by {args.signer!r}: {verdict}"
              f"{f' by prefix {decision.prefix}' if decision.prefix else ''}")
        return 0 if decision.allowed else 1
    return 1 if problems else 0


def _is_fpr(ident: str) -> bool:
    return len(ident) in (40, 64) and all(c in "0123456789ABCDEF" for c in ident)
