"""The ``.changes`` file dak quotes in its mails, as typed event fields.

dak pastes the uploaded ``.changes`` verbatim (still clear-signed by the
uploader) into announcements, ACCEPTED and bug-close mails. python-debian's
``deb822.Changes`` parses it; this module finds it in the mail text, checks the
fields an event relies on, and turns the rest into plain JSON values with
lowercase keys, so consumers no longer depend on Debian's field spelling.
"""

from __future__ import annotations

import re
from typing import Any

from debian import deb822

from gateway.errors import ParseError

#: dak's own rule for file names in an upload (``daklib.regexes.re_file_safe``).
SAFE_FILE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.~+-]*\Z")
SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+\Z")
VERSION = re.compile(r"[0-9A-Za-z.+~:-]+\Z")
ARCH = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
_SOURCE_FIELD = re.compile(r"(\S+)(?:\s+\((\S+)\))?\Z")

_ARMOR = "-----BEGIN PGP SIGNED MESSAGE-----"
_START = re.compile(r"^(?:-----BEGIN PGP SIGNED MESSAGE-----|Format:[ \t])", re.M)

#: Longest ``Changes:`` text copied into an event, in characters.
MAX_CHANGES_TEXT = 64 * 1024
#: Most files listed; a real upload has a handful, hundreds for big binary uploads.
MAX_FILES = 2000


def find_changes(text: str) -> str | None:
    """The embedded ``.changes`` (from its PGP armor or ``Format:`` line), or None."""
    match = _START.search(text)
    if match is None:
        return None
    return text[match.start():]


def parse_changes(text: str) -> dict[str, Any]:
    """Parse ``.changes`` text into event fields; raise :class:`ParseError` if unusable."""
    try:
        paragraph = deb822.Changes(text.splitlines(keepends=True))
    except Exception as exc:  # python-debian raises assorted types on junk
        raise ParseError(f"embedded .changes does not parse: {exc}") from None
    if text.lstrip().startswith(_ARMOR) and "-----BEGIN PGP SIGNATURE-----" not in text:
        raise ParseError("embedded .changes is truncated: PGP signature block missing")
    for field in ("Source", "Version", "Architecture"):
        if not str(paragraph.get(field, "")).strip():
            raise ParseError(f"embedded .changes lacks the {field} field")
    source, source_version = split_source(paragraph["Source"])
    version = check_version(paragraph["Version"])
    fields: dict[str, Any] = {
        "source": source,
        "version": version,
        "architectures": split_architectures(paragraph["Architecture"]),
        "distribution": _one_line(paragraph.get("Distribution")),
        "urgency": _urgency(paragraph.get("Urgency")),
        "maintainer": _one_line(paragraph.get("Maintainer")),
        "changed_by": _one_line(paragraph.get("Changed-By")),
        "date": _one_line(paragraph.get("Date")),
        "format": _one_line(paragraph.get("Format")),
        "binaries": str(paragraph.get("Binary", "")).split(),
        "closes": parse_closes(paragraph.get("Closes", "")),
        "changes": _changes_text(paragraph.get("Changes", "")),
        "files": _files(paragraph),
    }
    if source_version and source_version != version:
        fields["source_version"] = source_version
    return fields


def split_source(value: str) -> tuple[str, str | None]:
    """``name`` or ``name (version)`` (binNMUs) -> (name, version or None)."""
    match = _SOURCE_FIELD.match(value.strip())
    if match is None or not SOURCE_NAME.match(match.group(1)):
        raise ParseError(f"not a source package name: {value.strip()[:80]!r}")
    version = match.group(2)
    if version is not None:
        check_version(version)
    return match.group(1), version


def check_version(value: str) -> str:
    value = value.strip()
    if not VERSION.match(value) or not value[0].isdigit():
        raise ParseError(f"not a Debian version: {value[:80]!r}")
    return value


def split_architectures(value: str) -> list[str]:
    archs = value.split()
    for arch in archs:
        if not ARCH.match(arch):
            raise ParseError(f"not an architecture name: {arch[:40]!r}")
    return archs


def parse_closes(value: str) -> list[int]:
    bugs = []
    for token in str(value).replace(",", " ").split():
        token = token.lstrip("#")
        if not token.isdigit() or len(token) > 9:
            raise ParseError(f"Closes field holds a non-number: {token[:40]!r}")
        bugs.append(int(token))
    return sorted(set(bugs))


def _one_line(value: Any) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _urgency(value: Any) -> str | None:
    text = _one_line(value)
    return text.split()[0].lower() if text else None


def _changes_text(value: Any) -> str:
    """The changelog text, with the deb822 continuation encoding (`` .``) undone."""
    lines = []
    for line in str(value).split("\n"):
        if line.startswith(" "):
            line = line[1:]
        lines.append("" if line == "." else line)
    text = "\n".join(lines).strip("\n")
    if len(text) > MAX_CHANGES_TEXT:
        text = text[:MAX_CHANGES_TEXT] + "\n[... truncated]"
    return text


def _files(paragraph: deb822.Changes) -> list[dict[str, Any]]:
    """Merge ``Files`` (md5, section, priority) and ``Checksums-*`` into one list by name."""
    by_name: dict[str, dict[str, Any]] = {}
    sources = (
        ("files", "md5sum", "md5"),
        ("checksums-sha1", "sha1", "sha1"),
        ("checksums-sha256", "sha256", "sha256"),
        ("checksums-sha512", "sha512", "sha512"),
    )
    for field, hash_key, out_key in sources:
        rows = paragraph.get(field) or []
        if isinstance(rows, str):
            raise ParseError(f".changes field {field} is not a file list")
        for row in rows:
            name = row.get("name")
            size = row.get("size")
            digest = row.get(hash_key)
            if not name or not SAFE_FILE.match(name) or size is None or not digest:
                raise ParseError(f".changes {field} has a malformed line: {_row_text(row)!r}")
            if not size.isdigit() or not re.fullmatch(r"[0-9a-fA-F]+", digest):
                raise ParseError(f".changes {field} has a malformed line: {_row_text(row)!r}")
            entry = by_name.setdefault(name, {"name": name, "size": int(size)})
            if entry["size"] != int(size):
                raise ParseError(f".changes lists {name} with two different sizes")
            entry[out_key] = digest.lower()
            if field == "files":
                entry["section"] = row.get("section")
                entry["priority"] = row.get("priority")
            if len(by_name) > MAX_FILES:
                raise ParseError(f".changes lists more than {MAX_FILES} files")
    return list(by_name.values())


def _row_text(row: Any) -> str:
    return " ".join(str(v) for v in dict(row).values())[:120]
