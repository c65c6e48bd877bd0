"""Parse untrusted JSON with a depth bound and without NaN/Infinity.

Python's decoder accepts ``NaN``, ``Infinity`` and ``1e400`` (a float
infinity), none of which is JSON a subscriber can read, and nests until the
interpreter's recursion limit. Both are refused here with a :class:`ParseError`,
so ``busgate publish`` and the spool worker reject such input the same way.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from gateway.errors import ParseError


def _refuse_constant(name: str) -> Any:
    raise ParseError(f"{name} is not a JSON number (NaN and Infinity are refused)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ParseError(f"number {text[:40]} is out of range")
    return value


_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)

#: orjson: the reader when msgspec is missing (imported then, on first use).
orjson: Any = None


class _FloatSeen(Exception):
    """Raised from msgspec's float hook: a float is the stdlib's to read."""


def _no_float(text: str) -> Any:
    raise _FloatSeen


#: msgspec's decoder and what it raises, made on first use: importing msgspec (or orjson)
#: costs a command that decodes nothing (``busgate publish --message``) ~10 ms of start-up.
_fast: tuple[Any, tuple[type[Exception], ...]] | None = None


def _fast_decoder() -> tuple[Any, tuple[type[Exception], ...]]:
    """msgspec calls the hook for each float and for nothing else: a float-free text is
    read in C with no walk over the value afterwards, which orjson needs to find floats."""
    global _fast, orjson
    if _fast is None:
        try:
            import msgspec
        except ImportError:  # pragma: no cover - a dependency; orjson or the stdlib then
            try:
                import orjson as module
            except ImportError:  # the stdlib alone
                module = None
            orjson = module
            _fast = (None, ())
        else:
            _fast = (msgspec.json.Decoder(float_hook=_no_float),
                     (_FloatSeen, msgspec.DecodeError, UnicodeEncodeError))
    return _fast


def loads(text: str | bytes, max_depth: int) -> Any:
    """``json.loads`` refusing NaN/Infinity/overflowing numbers and nesting over ``max_depth``."""
    return loads_flagged(text, max_depth)[0]


def loads_flagged(text: str | bytes, max_depth: int,
                  errors: str = "strict") -> tuple[Any, bool]:
    """:func:`loads`, and whether the value is known to hold no float (then
    :func:`gateway.canonical.dumps_float_free` may encode it without looking again).
    Bytes are read as they are (no ``str`` made first: a subscriber's and ``busgate
    publish``'s every message); ``errors`` is how the stdlib path decodes them (a
    text that is not UTF-8 goes there)."""
    raw = isinstance(text, bytes | bytearray)
    # Fast path: fewer opening brackets than the bound cannot nest deeper than it.
    if raw:
        if text.count(b"[") + text.count(b"{") > max_depth:
            # UnicodeDecodeError is a ValueError, as json.loads raises
            text, raw = text.decode("utf-8", errors), False
            _check_text_depth(text, max_depth)
    elif text.count("[") + text.count("{") > max_depth:
        _check_text_depth(text, max_depth)
    fast, fast_errors = _fast or _fast_decoder()
    if fast is not None:
        # msgspec refuses NaN/Infinity, lone surrogates, what is not UTF-8 and what json
        # refuses, reads any integer exactly and hands every float to the hook: on a
        # float or any error the stdlib decides (same value, same error as before); what
        # is left is json's value (tests/test_canonical.py compares them over many texts).
        try:
            return fast.decode(text), True
        except fast_errors:
            pass
    elif orjson is not None:
        # orjson refuses NaN/Infinity/1e400 and lone surrogates, and reads an integer
        # over 64 bits as a float: any error, or any float, and the stdlib decides (same
        # value, same error as before); what is left is the same value, 4x faster.
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
        else:
            from gateway.canonical import _has_float

            if not _has_float(value):
                return value, True
    if raw:
        text = text.decode("utf-8", errors)
    try:
        return _decoder.decode(text), False
    except RecursionError:
        raise ParseError(f"JSON nested deeper than {max_depth} levels") from None


def check_depth(text: str, max_depth: int) -> None:
    """Raise :class:`ParseError` if JSON ``text`` nests deeper than ``max_depth``."""
    if text.count("[") + text.count("{") > max_depth:
        _check_text_depth(text, max_depth)


#: A JSON string (skipped whole, in C) or one bracket.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _check_text_depth(text: str, max_depth: int) -> None:
    """Exact nesting depth of JSON text, brackets inside strings ignored; no recursion."""
    depth = 0
    for match in _TOKENS.finditer(text):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise ParseError(f"JSON nested deeper than {max_depth} levels")
        elif char in "]}":
            depth -= 1
