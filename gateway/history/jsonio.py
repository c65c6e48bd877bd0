"""JSON in and out for the history (records, API answers, dashboard events): orjson when
it is installed, else the stdlib writing the same compact UTF-8 (Debian 12 has no
python3-orjson). The values here hold no NaN, where the two would differ."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:
    orjson = None

_STDLIB = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as ``orjson.dumps`` writes it."""
    if orjson is None:
        return _STDLIB.encode(value).encode()
    return orjson.dumps(value)


def loads(text: bytes | str) -> Any:
    return json.loads(text) if orjson is None else orjson.loads(text)


def dumps_indented(value: Any) -> str:
    """Two-space indented JSON for people (``busgate stats --json``)."""
    if orjson is None:
        return json.dumps(value, indent=2, ensure_ascii=False)
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
