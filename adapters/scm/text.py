"""Bytes from git to bounded text: never fails on a wrong encoding, never grows unbounded."""

from __future__ import annotations

import codecs

#: Tried in order after UTF-8 and any declared encoding: the mail adapters' fallbacks
#: (``adapters.mailparse.FALLBACK_CHARSETS``, not imported: the hook must start fast), so a
#: name in raw Latin-1 bytes reads the same in a commit as in a mail. Latin-1 never fails.
FALLBACK_CHARSETS = ("utf-8", "windows-1252", "latin-1")


def decode(data: bytes, encoding: str | None = None) -> str:
    """``data`` as text: valid UTF-8 wins, then ``encoding`` (e.g. a tag's ``encoding``
    header), then windows-1252, then Latin-1; no replacement characters.

    Old commits carry names and messages in Latin-1 without saying so; git
    hands them over as they are, so each field is decoded on its own.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    candidates = []
    if encoding:
        try:
            info = codecs.lookup(encoding.strip().lower())
        except LookupError:
            info = None
        if info is not None and getattr(info, "_is_text_encoding", True):
            candidates.append(info.name)
    for candidate in (*candidates, *FALLBACK_CHARSETS):
        try:
            return data.decode(candidate)
        except (ValueError, LookupError, TypeError):  # UnicodeError is a ValueError
            continue
    return data.decode("latin-1")  # pragma: no cover - latin-1 decodes any bytes


def clip(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def clean(text: str) -> str:
    """``text`` with undecodable bytes smuggled in by ``os.fsdecode``/``os.environ`` (lone
    surrogates) shown as ``\\xNN``, so it can always be encoded as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
