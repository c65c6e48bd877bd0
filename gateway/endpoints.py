"""The ZeroMQ endpoint grammar busgate accepts: ``tcp://host:port`` and ``ipc://path``.

One place for it, so ``check-config`` (bind addresses), the endpoints file and the
``--endpoint`` options of ``tail``/``replay`` refuse the same things with the same
words, before libzmq sees them (``127.0.0.1:9940`` without ``tcp://`` raises a bare
``ZMQError`` there; a port of 99400 is bound modulo 65536 by some versions).
Imports nothing heavy: ``config`` loads it on every command.
"""

from __future__ import annotations

import re

_TCP = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+|\*):([0-9]{1,5})")
_IPC = re.compile(r"ipc://[!-~]+")
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?")


def problem(url: str, *, bind: bool = False) -> str | None:
    """Why ``url`` is not a usable endpoint (``None`` when it is).

    ``bind`` also accepts the wildcard host ``*`` (``tcp://*:9940``)."""
    match = _TCP.fullmatch(url)
    if match:
        host, port = match.group(1), int(match.group(2))
        if host == "*" and not bind:
            return f"malformed URL {url!r} (want tcp://host:port or ipc://path)"
        if not host.startswith("[") and host != "*" and not all(
                _LABEL.fullmatch(label) for label in host.split(".")):
            return f"bad host {host!r} in {url!r}"
        return None if 0 < port < 65536 else f"port out of range in {url!r} (1-65535)"
    if _IPC.fullmatch(url):
        return None
    if url.startswith(("tcp://", "ipc://")):
        return f"malformed URL {url!r} (want tcp://host:port or ipc://path)"
    if "://" not in url:
        return f"unsupported URL {url!r} (want tcp://host:port or ipc://path, e.g. tcp://{url})"
    return f"unsupported URL {url!r} (only tcp:// and ipc:// are accepted)"
