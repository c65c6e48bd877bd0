"""The ``<old> <new> <refname>`` lines git gives a post-receive hook, read and classified.

Lines are data: a ref name is kept as text (non-UTF-8 bytes shown as ``\\xNN``)
and never handed to git or a shell; object ids must be hex of one length (40 for
SHA-1, 64 for SHA-256). A line that is not of this shape is reported, not
guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.errors import ParseError

_HEX = re.compile(rb"[0-9a-f]{40}(?:[0-9a-f]{24})?\Z")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
#: Longest ref name accepted (git itself stops far below; this bounds hostile input).
MAX_REF_BYTES = 4096

#: Ref namespace -> event object. Other refs (notes, merge requests, ...) make no event.
OBJECTS = {"refs/heads/": "branch", "refs/tags/": "tag"}


@dataclass(frozen=True)
class RefUpdate:
    """One pushed ref: ids are lowercase hex, ``None`` for "did not exist"."""

    old: str | None
    new: str | None
    ref: str
    #: The ref exactly as git gave it, to match ``for-each-ref`` output byte for byte.
    raw_ref: bytes

    @property
    def action(self) -> str:
        if self.old is None:
            return "create"
        if self.new is None:
            return "delete"
        return "update"

    #: ``branch``, ``tag``, or ``None`` for refs outside heads/ and tags/ (set from ``ref``).
    object: str | None = field(init=False, compare=False)
    #: The short name: ``main`` for ``refs/heads/main`` (set from ``ref``).
    name: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # computed once: a push of 100,000 refs asks for them several times each
        kind, short = None, self.ref
        for prefix, value in OBJECTS.items():
            if self.ref.startswith(prefix):
                short = self.ref[len(prefix):]
                kind = value if short else None
                break
        object.__setattr__(self, "object", kind)
        object.__setattr__(self, "name", short)


#: A well-formed line in one match (the common case of a 100,000-ref push); anything else
#: goes through the checks below, which say what is wrong.
_LINE = re.compile(rb"([0-9a-f]{40}(?:[0-9a-f]{24})?) ([0-9a-f]{40}(?:[0-9a-f]{24})?) "
                   rb"(refs/[^\x00-\x20\x7f]{0,%d})\Z" % (MAX_REF_BYTES - 5))


def parse_line(line: bytes) -> RefUpdate:
    """One stdin line (without its newline). Raises :class:`ParseError`."""
    match = _LINE.match(line)
    if match:
        old, new, ref = match.groups()
        if len(old) == len(new) and (old.strip(b"0") or new.strip(b"0")):
            return RefUpdate(
                old=old.decode("ascii") if old.strip(b"0") else None,
                new=new.decode("ascii") if new.strip(b"0") else None,
                ref=ref.decode("utf-8", "backslashreplace"),
                raw_ref=ref,
            )
    parts = line.split(b" ", 2)
    if len(parts) != 3:
        raise ParseError(f"not an '<old> <new> <ref>' line: {_show(line)}")
    old, new, ref = parts
    for value in (old, new):
        if not _HEX.match(value):
            raise ParseError(f"not an object id: {_show(value)}")
    if len(old) != len(new):
        raise ParseError(f"object ids of different lengths: {_show(line)}")
    if not ref.startswith(b"refs/") or len(ref) > MAX_REF_BYTES or _CONTROL.search(ref) \
            or b" " in ref:
        raise ParseError(f"not a ref name: {_show(ref)}")
    zero = b"0" * len(old)
    if old == zero and new == zero:
        raise ParseError(f"both object ids are zero: {_show(line)}")
    return RefUpdate(
        old=None if old == zero else old.decode("ascii"),
        new=None if new == zero else new.decode("ascii"),
        ref=ref.decode("utf-8", "backslashreplace"),
        raw_ref=ref,
    )


def parse_lines(data: bytes) -> tuple[list[RefUpdate], list[str]]:
    """All updates in ``data`` in order, and one message per line that was not one."""
    updates, problems = [], []
    for number, line in enumerate(data.split(b"\n"), 1):
        line = line.removesuffix(b"\r")
        if not line.strip():
            continue
        try:
            updates.append(parse_line(line))
        except ParseError as exc:
            problems.append(f"stdin line {number}: {exc}")
    return updates, problems


def _show(value: bytes, limit: int = 80) -> str:
    text = repr(value[:limit])[2:-1]
    return text + ("..." if len(value) > limit else "")
