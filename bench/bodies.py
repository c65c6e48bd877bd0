"""Realistic event bodies for the benches.

The dak accept body is parsed from a fixture mail by the real adapter (not
hand-written), so it has the size and shape the archive produces: nested lists,
non-ASCII names, a changes text. The small body is ~200 bytes of JSON, the size
of a typical wanna-build or git event.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DAK_FIXTURE = REPO / "fixtures" / "dak_mail" / "accepted-uploader.eml"


def dak_accept_body() -> dict[str, Any]:
    """The body of the dak accept event parsed from :data:`DAK_FIXTURE` (~2 KB JSON)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from adapters.mail import parse_mail
    from gateway import config

    settings = config.Settings()
    # The fixture's signature is not by a key in any keyring here; the body is what counts.
    settings = settings.with_section("dak", signatures="ignore")
    events = parse_mail(DAK_FIXTURE.read_bytes(), settings)
    (event,) = [e for e in events if e.topic_tokens()[-1] == "accept"]
    return dict(event.body)


def small_body() -> dict[str, Any]:
    """~200 bytes of JSON: a build-like event."""
    return {"package": "hebcal", "version": "4.31-1", "architecture": "amd64",
            "suite": "unstable", "state": "built", "builder": "buildd-x86-ubc-01",
            "log": "https://buildd.debian.org/status/fetch.php?pkg=hebcal&arch=amd64"}


BODIES = {"dak": dak_accept_body, "small": small_body}


def body(name: str) -> dict[str, Any]:
    return BODIES[name]()


def lines(template: dict[str, Any], n: int) -> bytes:
    """``n`` stdin lines for ``busgate publish --json-input``: the body plus its number."""
    encode = json.JSONEncoder(separators=(",", ":")).encode
    head = encode(template)[:-1]
    sep = "," if template else ""
    return "".join(f'{head}{sep}"n":{i}}}\n' for i in range(n)).encode()


if __name__ == "__main__":
    for name in BODIES:
        data = json.dumps(body(name), separators=(",", ":"))
        print(f"{name}: {len(data)} bytes: {data[:120]}...")
