"""Canonical JSON (sorted keys, compact, ASCII escapes, no NaN/Infinity), fast.

Every stored envelope's body is encoded once, in the spool worker; the stdlib
encoder is a fifth of the worker's time on a real dak body. ``orjson`` writes
the same bytes for strings, integers up to 64 bits, booleans, null, lists and
dicts with string keys, sorted by code point, except that it keeps non-ASCII as
UTF-8 (escaped here as json does, surrogate pairs included), may write a float
differently (``1e-05`` is ``0.00001`` there) and writes NaN/Infinity as null
instead of refusing them. So orjson is used only for a value holding no float
(one walk over it, cheaper than finding floats in the output); anything else
(floats, ints over 64 bits, lone surrogates, other types) goes to the stdlib
encoder. ``tests/test_canonical.py`` holds both equal over many bodies.
Without orjson installed, the stdlib encoder does everything.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

#: orjson, imported on first use: a command that encodes one body (``busgate publish
#: --message``) writes it with :data:`STDLIB` and skips the import (uuid, datetime...).
orjson: Any = None
_tried = False


def _fast_encoder() -> Any:
    """orjson, or None when it is not installed (then the stdlib encoder does everything)."""
    global orjson, _tried
    if not _tried:
        try:
            import orjson as module
        except ImportError:  # pragma: no cover - a dependency; stay correct without it
            module = None
        orjson, _tried = module, True
    return orjson


#: The reference encoding; ``allow_nan=False``: NaN/Infinity are not JSON.
STDLIB = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)
# json escapes DEL and all above. Written as "not 0..0x7e": the same set (every code point
# checked), but the range "\x7f-\U0010ffff" takes ~4 ms to compile, on every start-up.
_NON_ASCII = re.compile("[^\x00-\x7e]")


def _escape_char(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"


def _escape(match: re.Match[str]) -> str:
    return _escape_char(match.group())


#: Most distinct runs of non-ASCII characters whose escapes are remembered, and the longest
#: run remembered: names and words recur from body to body, and the escape of a known run
#: is one lookup (half of what escaping a dak body costs); past the count it starts again.
ESCAPE_CACHE = 4096
ESCAPE_CACHE_RUN = 32
_escaped_runs: dict[str, str] = {}


def _escape_error(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: json's ``\\uXXXX`` escapes for what ASCII cannot hold (the
    ASCII runs between stay in C)."""
    assert isinstance(error, UnicodeEncodeError)
    run = error.object[error.start:error.end]
    escaped = _escaped_runs.get(run)
    if escaped is None:
        escaped = "".join(map(_escape_char, run))
        if len(run) <= ESCAPE_CACHE_RUN:
            if len(_escaped_runs) >= ESCAPE_CACHE:
                _escaped_runs.clear()
            _escaped_runs[run] = escaped
    return escaped, error.end


_ERRORS = "busgate-json-escape"
codecs.register_error(_ERRORS, _escape_error)


def _has_float(value: Any) -> bool:
    """Whether ``value`` holds a float anywhere (no recursion; strings first: most are)."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str:
            continue
        if kind is dict:
            extend([v for v in item.values() if type(v) is not str])
        elif kind is list or kind is tuple:
            extend([v for v in item if type(v) is not str])
        elif kind is float:
            return True
    return False


def dumps(value: Any) -> str:
    """``STDLIB.encode(value)``, byte for byte, with orjson where that is provably equal."""
    if (orjson if _tried else _fast_encoder()) is None or _has_float(value):
        return STDLIB.encode(value)  # float text may differ; NaN must be refused
    return dumps_float_free(value)


def dumps_float_free(value: Any) -> str:
    """:func:`dumps` for a value the caller has already proven to hold no float (e.g.
    :func:`gateway.jsonbounds.loads_flagged` said so while parsing it): the walk over the
    value, a third of :func:`dumps`' cost on a dak body, is not made again. Only for
    values parsed that way: a float here would be written as orjson writes it (NaN as
    null), not as the stdlib does."""
    fast = orjson if _tried else _fast_encoder()
    if fast is None:
        return STDLIB.encode(value)
    try:
        out = fast.dumps(value, option=fast.OPT_SORT_KEYS)
    except TypeError:  # ints over 64 bits, non-string keys, lone surrogates, other types
        return STDLIB.encode(value)
    return _ascii(out).decode("ascii")


def dumps_float_free_bytes(value: Any) -> bytes:
    """:func:`dumps_float_free` as ASCII bytes: what a spool line is made of, without the
    decode and encode a ``str`` would cost (``busgate publish``, per message)."""
    fast = orjson if _tried else _fast_encoder()
    if fast is None:
        return STDLIB.encode(value).encode("ascii")
    try:
        out = fast.dumps(value, option=fast.OPT_SORT_KEYS)
    except TypeError:
        return STDLIB.encode(value).encode("ascii")
    return _ascii(out)


def _ascii(out: bytes) -> bytes:
    """orjson's UTF-8 output with json's ASCII escapes (DEL too, which is ASCII)."""
    if b"\x7f" in out:  # rare: the slow sub
        return _NON_ASCII.sub(_escape, out.decode()).encode("ascii")
    if out.isascii():
        return out
    return out.decode().encode("ascii", _ERRORS)
