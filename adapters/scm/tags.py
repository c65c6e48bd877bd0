"""Annotated tags: tagger and message, read for all pushed tags by ONE ``git cat-file --batch``."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from adapters.scm.git import Git
from adapters.scm.text import clip, decode

_IDENT = re.compile(rb"(.*?) ?<([^>]*)> (-?\d+) ([+-])(\d\d)(\d\d)\Z")
_SIGNATURES = (b"-----BEGIN PGP SIGNATURE-----", b"-----BEGIN SSH SIGNATURE-----",
               b"-----BEGIN SIGNED MESSAGE-----")
#: Bytes read back from ``cat-file --batch`` for one tag, at most.
MAX_TAG_BYTES = 1 << 20
#: ... and for all tags of one push (100,000 ordinary tags are about 30 MiB); tags past it
#: are not read, and their events say ``complete: false``.
MAX_PUSH_TAG_BYTES = 128 << 20


def read_tags(git: Git, oids: list[str], max_chars: int) -> dict[str, dict[str, Any]]:
    """Tag object id -> tag details, for the ids that name annotated tags."""
    if not oids:
        return {}
    stdin = "".join(f"{oid}\n" for oid in oids).encode("ascii")
    out = git.run(["cat-file", "--batch"], stdin,
                  limit=min(len(oids) * MAX_TAG_BYTES, MAX_PUSH_TAG_BYTES))
    return parse_batch(out.data, max_chars)


def parse_batch(data: bytes, max_chars: int) -> dict[str, dict[str, Any]]:
    """``cat-file --batch`` output (``<oid> <type> <size>\\n<content>\\n`` records)."""
    tags: dict[str, dict[str, Any]] = {}
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break
        header = data[pos:end].split(b" ")
        pos = end + 1
        if len(header) != 3 or not header[2].isdigit():  # "<oid> missing" and the like
            continue
        size = int(header[2])
        if pos + size > len(data):  # output cut inside this object: not read, not guessed at
            break
        content = data[pos:pos + size]
        pos += size + 1
        if header[1] == b"tag":
            tags[header[0].decode("ascii", "replace")] = parse_tag(content, max_chars)
    return tags


def parse_tag(content: bytes, max_chars: int) -> dict[str, Any]:
    """The fields of one tag object: target, tagger, message (signature split off)."""
    head, _, message = content.partition(b"\n\n")
    fields: dict[bytes, bytes] = {}
    for line in head.split(b"\n"):
        key, _, value = line.partition(b" ")
        fields.setdefault(key, value)
    encoding = fields.get(b"encoding", b"utf-8").decode("ascii", "replace")
    signature = min((i for i in (message.find(s) for s in _SIGNATURES) if i >= 0), default=-1)
    signed = signature >= 0
    if signed:
        message = message[:signature]
    text, cut = clip(decode(message, encoding).rstrip("\n"), max_chars)
    return {
        "object": decode(fields.get(b"object", b"")),
        "type": decode(fields.get(b"type", b"")),
        "name": decode(fields.get(b"tag", b""), encoding),
        "tagger": parse_ident(fields[b"tagger"], encoding) if b"tagger" in fields else None,
        "message": text,
        "message_truncated": cut,
        "signed": signed,
    }


def parse_ident(value: bytes, encoding: str = "utf-8") -> dict[str, Any]:
    """``Name <email> 1700000000 +0100`` -> name, email and an ISO 8601 date."""
    match = _IDENT.match(value)
    if not match:
        return {"name": decode(value, encoding), "email": "", "date": None}
    name, email, stamp, sign, hours, minutes = match.groups()
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    try:
        zone = timezone(-offset if sign == b"-" else offset)
        date = datetime.fromtimestamp(int(stamp), zone).isoformat()
    except (ValueError, OverflowError, OSError):
        date = None
    return {"name": decode(name, encoding), "email": decode(email, encoding), "date": date}
