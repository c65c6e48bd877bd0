"""Realistic history messages for bench/history.py: the adapters' real event shapes
(the golden files every adapter's tests compare with), on a year of traffic with the
skew a distribution has (a few packages and people do most of it: Zipf ranks).

Deterministic for a given N (seeded), so a cached database matches a rebuilt one.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "fixtures" / "golden"
PREFIX = "org.debian.dev"
#: The year the messages cover (ends here: 2026-12-01 UTC).
END = 1796083200.0
YEAR = 365 * 86400.0
#: How often each service speaks (a builds-heavy bus, like Debian's).
SERVICE_WEIGHTS = {"wannabuild": 50, "git": 20, "dak_mail": 15, "debbugs": 15}
PACKAGES = 30_000
USERS = 3_000
#: Words package names are made of (real-looking names, not "pkg17").
_STEMS = ("gtk", "qt", "xml", "ssl", "yaml", "json", "http", "zlib", "png", "jpeg", "curl",
          "glib", "perl", "ruby", "lua", "tcl", "boost", "llvm", "rust", "go", "node",
          "django", "flask", "numpy", "pandas", "hebcal", "dpkg", "apt", "udisks", "gawk")
_PREFIXES = ("", "lib", "python3-", "golang-", "node-", "r-cran-", "ruby-", "lib", "")
_FIRST = ("alice", "bob", "carol", "dave", "eve", "frank", "grace", "heidi", "ivan", "judy",
          "jorg", "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor")


def package_name(rank: int) -> str:
    stem = _STEMS[rank % len(_STEMS)]
    prefix = _PREFIXES[(rank // len(_STEMS)) % len(_PREFIXES)]
    number = rank // (len(_STEMS) * len(_PREFIXES))
    return f"{prefix}{stem}{number if number else ''}"


def user_name(rank: int) -> str:
    first = _FIRST[rank % len(_FIRST)]
    number = rank // len(_FIRST)
    return f"{first}{number if number else ''}"


def templates() -> dict[str, list[dict[str, Any]]]:
    """The golden events per service: topic tail, body, usernames, packages."""
    found: dict[str, list[dict[str, Any]]] = {}
    for service in SERVICE_WEIGHTS:
        for path in sorted((GOLDEN / service).glob("*.json")):
            data = json.loads(path.read_text("utf-8"))
            events = data.get("events", []) if isinstance(data, dict) else data
            for event in events:
                if isinstance(event, dict) and "topic" in event and "body" in event:
                    found.setdefault(service, []).append(event)
    return found


def _zipf_table(n: int, rng: random.Random, draws: int) -> list[int]:
    """``draws`` ranks 0..n-1 drawn with Zipf (s=1) weights."""
    weights = [1.0 / (k + 1) for k in range(n)]
    return rng.choices(range(n), weights=weights, k=draws)


def _retarget(body: Any, package: str, user: str, n: int) -> Any:
    """The template body naming ``package`` and ``user`` instead of its own."""
    if isinstance(body, dict):
        out = {}
        for key, value in body.items():
            if key in ("package", "source") and isinstance(value, str):
                out[key] = package
            elif key in ("pusher", "maintainer", "changed_by", "from", "builder") \
                    and isinstance(value, str):
                out[key] = user if key == "pusher" else f"{user} <{user}@debian.org>"
            else:
                out[key] = _retarget(value, package, user, n)
        return out
    if isinstance(body, list):
        return [_retarget(v, package, user, n) for v in body[:20]]
    return body


def envelopes(n: int, seed: int = 14) -> Iterator[dict[str, Any]]:
    """``n`` envelopes as the recorder receives them (seq_id 1..n, one publisher)."""
    rng = random.Random(seed)
    by_service = templates()
    services = list(SERVICE_WEIGHTS)
    weights = [SERVICE_WEIGHTS[s] for s in services]
    chunk = 100_000
    for base in range(0, n, chunk):
        size = min(chunk, n - base)
        picks = rng.choices(services, weights=weights, k=size)
        packages = _zipf_table(PACKAGES, rng, size)
        users = _zipf_table(USERS, rng, size)
        for j in range(size):
            i = base + j + 1
            template = rng.choice(by_service[picks[j]])
            package, user = package_name(packages[j]), user_name(users[j])
            body = _retarget(copy.deepcopy(template["body"]), package, user, i)
            if isinstance(body, dict):
                body["n"] = i
            stamp = int(END - YEAR + (i - 1) * YEAR / n)
            names = {f"fedora_messaging_user_{user}": True,
                     f"busgate_package_{package}": True}
            for extra in template.get("usernames", [])[:2]:
                names[f"fedora_messaging_user_{extra}"] = True
            yield {"topic": template["topic"], "msg": body,
                   "msg_id": f"2026-{uuid.UUID(int=rng.getrandbits(128), version=4)}",
                   "timestamp": stamp, "i": i, "username": "busgate", "seq_id": i,
                   "publisher": "bench", "publisher_epoch": "bench-epoch",
                   "headers": {"fedora_messaging_schema": template.get("schema", "base"),
                               "fedora_messaging_severity": 20, **names}}
