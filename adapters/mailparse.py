"""MIME helpers shared by the mail adapters (dak, debbugs).

Mail from the archive arrives in every shape dak produced over twenty years:
single-part 8bit, quoted-printable, ``multipart/signed`` OpenPGP, RFC 2047
headers, and charset labels that do not match the bytes. These helpers turn a
message into clean text without ever raising on bad encodings: a wrong or
unknown charset falls back (UTF-8, then windows-1252, then latin-1), and header
values come back unfolded with control characters removed, so a header cannot
smuggle a line break into an event.

:data:`POLICY` is ``email.policy.default`` with a memo for parsed header
objects: the standard policy re-parses ``Content-Type`` on every
``get_content_type()`` call, which made parsing ten times slower than the rest
of the adapter. Messages are still :class:`email.message.EmailMessage` with the
default semantics.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from email.header import decode_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import parsedate_to_datetime
from typing import Any

_CACHE_MAX = 2048
_CACHE_VALUE_MAX = 512
_header_cache: dict[tuple[str, str], Any] = {}


class _MemoPolicy(EmailPolicy):
    """``email.policy.default``, remembering parsed header objects (they are immutable)."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name") or len(value) > _CACHE_VALUE_MAX:
            return super().header_fetch_parse(name, value)
        key = (name, value)
        parsed = _header_cache.get(key)
        if parsed is None:
            parsed = super().header_fetch_parse(name, value)
            if len(_header_cache) >= _CACHE_MAX:
                _header_cache.clear()
            _header_cache[key] = parsed
        return parsed


POLICY = _MemoPolicy()

#: Charsets tried, in order, when the declared one is missing, unknown or wrong.
FALLBACK_CHARSETS = ("utf-8", "windows-1252", "latin-1")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"[ \t]{2,}")


def parse(raw: bytes) -> EmailMessage:
    """Parse raw RFC 822 bytes once (never raises on malformed MIME; defects are recorded)."""
    message = BytesParser(policy=POLICY).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def header(message: Message, name: str) -> str | None:
    """First ``name`` header, RFC 2047-decoded, unfolded, control characters removed."""
    wanted = name.lower()
    for key, value in message.raw_items():
        if key.lower() == wanted:
            return clean_header_value(value)
    return None


def headers(message: Message, name: str) -> list[str]:
    """Every ``name`` header, decoded like :func:`header`."""
    wanted = name.lower()
    return [clean_header_value(v) for k, v in message.raw_items() if k.lower() == wanted]


def clean_header_value(value: Any) -> str:
    """Decode RFC 2047 words with charset fallbacks; one line, no control characters."""
    text = str(value)
    if "=?" in text:
        text = decode_rfc2047(text)
    text = _CONTROL.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def decode_rfc2047(value: str) -> str:
    """``=?charset?Q|B?...?=`` words to text; bad charsets or encodings never raise."""
    unfolded = " ".join(value.splitlines())
    try:
        parts = decode_header(unfolded)
    except (ValueError, LookupError, AssertionError):
        return unfolded
    out = []
    for chunk, charset in parts:
        out.append(chunk if isinstance(chunk, str) else decode_bytes(chunk, charset))
    return "".join(out)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes to text: valid UTF-8 wins, then the declared charset, then the fallbacks.

    Valid UTF-8 with non-ASCII bytes is almost never meant as anything else, so
    it is preferred over a (often wrong) ``latin-1`` or ``us-ascii`` label;
    latin-1 last never fails.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    candidates = []
    if charset:
        label = charset.strip().strip('"').lower()
        with contextlib.suppress(LookupError):
            candidates.append(codecs.lookup(label).name)
    candidates += FALLBACK_CHARSETS
    for candidate in candidates:
        try:
            return data.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")  # pragma: no cover - latin-1 decodes any bytes


def part_text(part: Message) -> str:
    """Decoded text of one non-multipart part (transfer encoding and charset)."""
    payload = part.get_payload(decode=True)
    if payload is None:  # a multipart, or nothing at all
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    assert isinstance(payload, bytes)
    return decode_bytes(payload, part.get_param("charset"))  # type: ignore[arg-type]


def text_body(message: Message) -> str:
    """The mail's main text: the first ``text/plain`` part that is not an attachment.

    For ``multipart/signed`` that is the signed body (part 1); the detached
    signature part is skipped. A part without a Content-Type is text/plain.
    Returns "" when the mail has no text part.
    """
    fallback: Message | None = None
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_content_type() != "text/plain":
            continue
        if _is_attachment(part):
            fallback = fallback or part
            continue
        return normalize_newlines(part_text(part))
    return normalize_newlines(part_text(fallback)) if fallback is not None else ""


def _is_attachment(part: Message) -> bool:
    disposition = part.get("Content-Disposition")
    return disposition is not None and str(disposition).split(";")[0].strip().lower() \
        == "attachment"


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def message_id(message: Message) -> str | None:
    """The Message-Id without spaces (``<...>`` kept), or None."""
    value = header(message, "Message-Id")
    if not value:
        return None
    return value.replace(" ", "")[:998] or None


def date_to_epoch(value: str | None) -> float | None:
    """An RFC 2822 date (``Date:`` header, removals.822 ``Date``) as epoch seconds;
    ``None`` when absent or unparsable (the event then carries no source time)."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
