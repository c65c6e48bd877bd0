"""Bytes from git to bounded text: never fails on a wrong encoding, never grows unbounded."""

from __future__ import annotations


def decode(data: bytes, encoding: str = "utf-8") -> str:
    """``data`` as text; undecodable bytes become U+FFFD, an unknown codec falls back to UTF-8."""
    try:
        return data.decode(encoding, "replace")
    except (LookupError, ValueError, TypeError):  # unknown codec, or not a text codec (rot13)
        return data.decode("utf-8", "replace")


def clip(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def clean(text: str) -> str:
    """``text`` with undecodable bytes smuggled in by ``os.fsdecode``/``os.environ`` (lone
    surrogates) shown as ``\\xNN``, so it can always be encoded as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
