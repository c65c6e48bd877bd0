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
of the adapter. Messages are still :class:`email.message.EmailMessage`; the
MIME structure headers and any header over 512 characters come back as raw
text instead of header objects, so parsing stays linear in the mail's size.
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import re
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from gateway.errors import ParseError

_CACHE_MAX = 2048
_CACHE_VALUE_MAX = 512
_header_cache: dict[tuple[str, str], Any] = {}
#: Headers handed out as raw text, never parsed into header objects (see header_fetch_parse).
_RAW_HEADERS = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})


class _MemoPolicy(EmailPolicy):
    """``email.policy.default``, remembering parsed header objects (they are immutable)."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return super().header_fetch_parse(name, value)
        if len(value) > _CACHE_VALUE_MAX or name.lower() in _RAW_HEADERS:
            # The structured parser costs microseconds per byte (a 1 MB Content-Type took
            # seconds, and the feed parser asks for every part's): the raw text is what
            # the MIME methods we call (get_content_type, get_param) work on anyway.
            return value
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
#: One RFC 2047 encoded word (charset may carry an RFC 2231 ``*lang`` suffix).
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([qQbB])\?([^?\s]*)\?=")
_BLANK = re.compile(r"[ \t\r\n]*\Z")

#: Default of ``mail.max_header_bytes``: the longest header parsed.
MAX_HEADER_BYTES = 65536


def parse(raw: bytes) -> EmailMessage:
    """Parse raw RFC 822 bytes once (never raises on malformed MIME; defects are recorded)."""
    message = BytesParser(policy=POLICY).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def check_header_sizes(message: Message, limit: int) -> None:
    """Refuse a mail holding a header (in any MIME part) longer than ``limit`` bytes.

    Runs right after parsing, over the raw stored values, before any header is
    decoded: header parsing and RFC 2047 decoding in the standard library grow
    faster than linearly with a header's length, and no real header comes near
    the limit. One linear pass.
    """
    for part in message.walk():
        for name, value in part.raw_items():
            if len(name) + len(value) + 2 > limit:
                raise ParseError(f"mail header {name[:40]!r} is over mail.max_header_bytes "
                                 f"({limit} bytes)")


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
    """``=?charset?Q|B?...?=`` words to text; bad charsets or encodings never raise.

    Written here rather than taken from ``email.header.decode_header``, whose
    time grows with the square of the number of encoded words (a 1 MB subject
    took seconds). One pass: adjacent words of one charset are joined as bytes
    before decoding (a multi-byte character may be split across words), the
    blank between two encoded words is dropped (RFC 2047 section 6.2).
    """
    unfolded = " ".join(value.splitlines())
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset: str | None = None
    position = 0
    for match in _ENCODED_WORD.finditer(unfolded):
        between = unfolded[position:match.start()]
        if between and not (pending and _BLANK.match(between)):
            if pending:
                out.append(decode_bytes(b"".join(pending), pending_charset))
                pending = []
            out.append(between)
        charset = match.group(1).lower()
        data = _decode_word(match.group(2), match.group(3))
        if pending and charset != pending_charset:
            out.append(decode_bytes(b"".join(pending), pending_charset))
            pending = []
        pending_charset = charset
        pending.append(data)
        position = match.end()
    if pending:
        out.append(decode_bytes(b"".join(pending), pending_charset))
    out.append(unfolded[position:])
    return "".join(out)


def _decode_word(encoding: str, text: str) -> bytes:
    try:
        if encoding in "qQ":
            return binascii.a2b_qp(text.encode("ascii", "replace"), header=True)
        padded = text + "=" * (-len(text) % 4)
        return binascii.a2b_base64(padded.encode("ascii", "replace"))
    except (binascii.Error, ValueError):
        return text.encode("ascii", "replace")


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


_ADDRESS_SPECIALS = re.compile(r'[,;:<>@"()\[\]\\]')


def display_address(value: str) -> str:
    """``Name <address>`` from either ``Name <address>`` or the old ``address (Name)``.

    The name is quoted only when it holds a separator; a bare address stays bare;
    text that is no address comes back unchanged (stripped).
    """
    pairs = getaddresses([value])
    if len(pairs) != 1 or not pairs[0][1] or "@" not in pairs[0][1]:
        return value.strip()
    return format_address(*pairs[0])


def format_address(name: str, address: str) -> str:
    """``Name <address>``, the name quoted only when it holds a separator."""
    name, address = " ".join(name.split()), " ".join(address.split())
    if not name or not address:
        return address or name
    if _ADDRESS_SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


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
