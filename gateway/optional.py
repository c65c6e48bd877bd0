"""Libraries some features need that a distribution may lack or ship too old.

Debian 12 has no orjson or pysequoia, and its irc (8.5), aiormq (6.4), starlette (0.26)
and uvicorn (0.17) predate the APIs busgate uses. Those features then fail with one line
naming what to install, as a configuration error (exit 2), instead of an ImportError or
AttributeError deep inside.
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType

from gateway.errors import ConfigError

#: distribution -> (import name, minimum version, how to get it)
NEEDS = {
    "irc": ("irc", "20.4", "pip install 'irc>=20.4' (Debian 12's python3-irc 8.5 is too old)"),
    "aiormq": ("aiormq", "6.8", "pip install 'aiormq>=6.8,<8' (Debian 12's python3-aiormq "
                                "6.4 is too old)"),
    "pysequoia": ("pysequoia", "0.1.30", "pip install 'pysequoia>=0.1.30' (not in Debian 12)"),
    "starlette": ("starlette", "0.26", "apt install python3-starlette, or pip install "
                                       "'starlette>=0.26'"),
    "uvicorn": ("uvicorn", "0.17", "apt install python3-uvicorn, or pip install "
                                   "'uvicorn>=0.17'"),
}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def problem(dist: str) -> str | None:
    """Why ``dist`` cannot be used (missing or older than busgate needs), or None."""
    from importlib import metadata

    _, minimum, _ = NEEDS[dist]
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "is not installed"
    if _version_tuple(version) < _version_tuple(minimum):
        return f"is {version}, older than the {minimum} busgate needs"
    return None


def require(dist: str, feature: str) -> ModuleType:
    """The module of ``dist``, or ConfigError saying what ``feature`` needs installed."""
    name, _, how = NEEDS[dist]
    why = problem(dist)
    if why is not None:
        raise ConfigError(f"{feature} needs the Python package {dist}, which {why}: {how}")
    return importlib.import_module(name)
