"""How a message looks to a person: the one-line terse form, the pretty form, colours.

Shared by ``busgate tail`` and any later consumer that prints messages (IRC lines,
a dashboard), so a message reads the same everywhere. What a message *says*
(summary, link) comes from its type (:class:`gateway.messages.TypeIndex`); this
module only lays it out, makes it safe for a terminal and colours it.

Colour follows common CLI habits and https://no-color.org: ``--color=always`` and
``never`` are obeyed as given; ``auto`` colours only a terminal, and not when
``NO_COLOR`` is set to a non-empty value or ``TERM`` is ``dumb``.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from gateway.messages import Message, TypeIndex, clip

#: Leading topic tokens that are the ``org.<distribution>.<env>`` prefix.
PREFIX_TOKENS = 3
#: Longest link shown; a longer one is left out rather than cut (a cut link is wrong).
MAX_LINK_CHARS = 2000

RESET = "\033[0m"
DIM = "\033[2m"
BOLD = "\033[1m"
LINK = "\033[4;34m"
REPLAYED = "\033[33m"
#: Foreground colours a service is given (by a stable hash of its name, so a service
#: keeps its colour across runs and machines without a table naming services).
SERVICE_PALETTE = ("\033[36m", "\033[32m", "\033[35m", "\033[34m", "\033[33m",
                   "\033[96m", "\033[92m", "\033[95m", "\033[94m", "\033[93m")


def use_colour(choice: str, stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to write ANSI colours to ``stream`` for ``--color=choice``."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR", "") != "" or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def service_colour(service: str) -> str:
    """The ANSI colour of a service token (stable across runs)."""
    return SERVICE_PALETTE[zlib.crc32(service.encode()) % len(SERVICE_PALETTE)]


# C0 and C1 controls, DEL, and the bidi overrides/isolates: a message must not move the
# cursor, clear the screen, retitle the terminal or reorder what is shown around it.
_UNSAFE = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_UNSAFE.update({c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def safe(text: str) -> str:
    """``text`` with control characters shown escaped (``\\x1b``), never interpreted."""
    return text.translate(_UNSAFE)


def topic_tail(topic: str, prefix_tokens: int = PREFIX_TOKENS) -> str:
    """The topic without ``org.<distribution>.<env>.`` (the whole topic if shorter)."""
    tokens = topic.split(".")
    return ".".join(tokens[prefix_tokens:]) if len(tokens) > prefix_tokens else topic


def clock(envelope: Mapping[str, Any], fmt: str = "%H:%M:%S") -> str:
    """The envelope's timestamp in local time (``?`` when it has none)."""
    stamp = envelope.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        try:
            return time.strftime(fmt, time.localtime(stamp))
        except (OverflowError, OSError, ValueError):
            pass
    return "?"


@dataclass(frozen=True)
class Description:
    """What a message says, as its type computes it, safe to print."""

    message: Message
    summary: str
    url: str | None

    @property
    def typed(self) -> bool:
        """A registered type claims the message (not the base :class:`Message`)."""
        return type(self.message) is not Message


def message_of(envelope: Mapping[str, Any], index: TypeIndex) -> Message:
    """The envelope's message as ``index`` types it (a header naming the base type falls
    back to the reader's own type for the topic: see :meth:`TypeIndex.for_envelope`)."""
    return index.for_envelope(envelope, PREFIX_TOKENS)


def describe(envelope: Mapping[str, Any], index: TypeIndex) -> Description:
    """The envelope's type, summary and link. A type that fails on this body (another
    publisher's malformed message) gives the base summary rather than stop the reader."""
    message = message_of(envelope, index)
    try:
        summary, url = message.summary, message.url
    except Exception:
        summary, url = Message.summary.fget(message), None  # type: ignore[attr-defined]
    if not isinstance(url, str) or len(url) > MAX_LINK_CHARS or not url.strip():
        url = None
    # clip: one line of at most MAX_SUMMARY_CHARS even from a type that does not clip.
    return Description(message, safe(clip(str(summary))), safe("".join(url.split())) if url
                       else None)


def terse(envelope: Mapping[str, Any], description: Description, colour: bool = False) -> str:
    """``HH:MM:SS topic-tail summary [link]``: one line per message."""
    tail = safe(topic_tail(str(envelope.get("topic", ""))))
    service = tail.split(".", 1)[0]
    if colour:
        line = (f"{DIM}{clock(envelope)}{RESET} {service_colour(service)}{tail}{RESET} "
                f"{description.summary}")
        return line + (f" {LINK}{description.url}{RESET}" if description.url else "")
    line = f"{clock(envelope)} {tail} {description.summary}"
    return line + (f" {description.url}" if description.url else "")


def pretty(envelope: Mapping[str, Any], description: Description, *, replayed: bool = False,
           colour: bool = False) -> str:
    """A head line (time, topic, publisher and seq_id, msg_id), the summary and link when
    a type gives them, then the body as indented JSON."""
    topic = safe(str(envelope.get("topic")))
    service = topic_tail(topic).split(".", 1)[0]
    dim, top, link, rep, reset = ((DIM, BOLD + service_colour(service), LINK, REPLAYED, RESET)
                                  if colour else ("",) * 5)
    seq = envelope.get("seq_id")
    meta = f"{envelope.get('publisher', '?')}#{seq}" if seq is not None else "unsequenced"
    head = (f"{dim}{clock(envelope, '%Y-%m-%d %H:%M:%S')}{reset} {top}{topic}{reset} "
            f"{dim}({safe(meta)}, {safe(str(envelope.get('msg_id')))}){reset}")
    if replayed:
        head += f" {rep}[replayed]{reset}"
    lines = [head]
    if description.typed or description.url:
        about = f"  {description.summary}"
        lines.append(about + (f" {link}{description.url}{reset}" if description.url else ""))
    body = json.dumps(envelope.get("msg"), indent=2, sort_keys=True, ensure_ascii=False)
    lines += ("    " + safe(line) for line in body.splitlines())
    return "\n".join(lines)
