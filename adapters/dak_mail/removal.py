"""Package removals (``dak rm``): the mail's summary table and ftp-master's removals.822.

Both sources describe one removal as rows of (package, version, architectures),
``source`` counting as an architecture. Rows are normalised the same way from
either source, so the removal key (suites + a digest of the rows) is the same
whether the event came from the ``Bug#N: Removed package(s)`` mail, a second
mail for another closed bug, or the removals.822 log.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from debian import deb822

from adapters.dak_mail.changes import ARCH, SOURCE_NAME, check_version
from gateway.errors import ParseError

#: A single token (package or version cell of a summary row).
_TOKEN = re.compile(r"\S+")
_REASON_START = "------------------- Reason -------------------"
_REASON_END = "----------------------------------------------"
_BIN_822 = re.compile(r"([^\s_]+)_(\S+)")
#: Binary package names are looser than source names (uppercase is not allowed either).
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]*\Z")


def rows_from_summary(text: str) -> list[dict[str, Any]]:
    """Rows of the removal table in an ``rm.bug-close`` mail body (before the Reason block)."""
    head = text.split(_REASON_START, 1)[0]
    rows = []
    for line in head.splitlines():
        row = _summary_row(line)
        if row is not None:
            package, version, archs = row
            rows.append(_row(package, version, [a.strip() for a in archs.split(",") if a.strip()]))
    return merge_rows(rows)


def _summary_row(line: str) -> tuple[str, str, str] | None:
    """``%10s | %10s | %s`` -> (package, version, architectures), or None for other lines.

    Split and strip rather than one regular expression: ``(.*?)\\s*$`` over a row with
    a long run of blanks took quadratic time (a 100 KB row held the spool for minutes).
    """
    cells = line.split("|", 2)
    if len(cells) != 3:
        return None
    package, version = cells[0].strip(), cells[1].strip()
    if not _TOKEN.fullmatch(package) or not _TOKEN.fullmatch(version):
        return None
    return package, version, cells[2].strip()


def reason_from_summary(text: str) -> str | None:
    if _REASON_START not in text:
        return None
    reason = text.split(_REASON_START, 1)[1].split(_REASON_END, 1)[0]
    return reason.strip() or None


def _row(package: str, version: str, archs: list[str]) -> dict[str, Any]:
    if not _PACKAGE.match(package):
        raise ParseError(f"removal row has a bad package name: {package[:60]!r}")
    check_version(version)
    for arch in archs:
        if not ARCH.match(arch):
            raise ParseError(f"removal row has a bad architecture: {arch[:40]!r}")
    if not archs:
        raise ParseError(f"removal row for {package} lists no architecture")
    return {"package": package, "version": version, "architectures": archs}


def merge_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (package, version), architectures sorted with ``source`` first."""
    merged: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        merged.setdefault((row["package"], row["version"]), set()).update(row["architectures"])
    return [
        {"package": package, "version": version,
         "architectures": sorted(archs, key=lambda a: (a != "source", a))}
        for (package, version), archs in sorted(merged.items())
    ]


def removal_key(suites: list[str], rows: list[dict[str, Any]]) -> str:
    """``dak:remove:<suites>:<digest of the rows>``, the same for mail and removals.822."""
    canon = "\n".join(
        f"{r['package']} {r['version']} {','.join(r['architectures'])}" for r in rows
    )
    digest = hashlib.sha256(canon.encode()).hexdigest()[:24]
    return f"dak:remove:{'+'.join(sorted(suites))}:{digest}"


def split_suites(text: str) -> list[str]:
    """``unstable``, ``a, b and c`` (utils.join_with_commas_and) or comma lists -> names."""
    names = re.split(r"\s*,\s*|\s+and\s+", text.strip())
    suites = [n for n in names if n]
    for name in suites:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*(?:->[a-z0-9][a-z0-9.+-]*)?", name):
            raise ParseError(f"not a suite name: {name[:60]!r}")
    return suites


def parse_removals_822(text: str) -> list[dict[str, Any]]:
    """Each stanza of ftp-master's removals.822 log, as removal fields (see the schema)."""
    removals = []
    for number, stanza in enumerate(deb822.Removals.iter_paragraphs(text.splitlines(True)), 1):
        if not stanza:
            continue
        suite = str(stanza.get("Suite", "")).strip()
        if not suite:
            raise ParseError(f"removals.822 stanza {number} has no Suite")
        rows = []
        for line in str(stanza.get("Sources", "")).split("\n"):
            line = line.strip()
            if line:
                package, _, version = line.partition("_")
                if not SOURCE_NAME.match(package) or not version:
                    raise ParseError(f"removals.822 stanza {number}: bad Sources line {line!r}")
                rows.append(_row(package, version, ["source"]))
        for line in str(stanza.get("Binaries", "")).split("\n"):
            line = line.strip()
            if not line:
                continue
            package, version, archs = _binaries_line(line, number)
            rows.append(_row(package, version, [a.strip() for a in archs.split(",")]))
        if not rows:
            raise ParseError(f"removals.822 stanza {number} removes nothing")
        removals.append({
            "suites": split_suites(suite),
            "suite_text": suite,
            "rows": merge_rows(rows),
            "reason": " ".join(str(stanza.get("Reason", "")).split()) or None,
            "bugs": _bugs(stanza.get("Bug", "")),
            "also_bugs": _bugs(stanza.get("Also-Bugs", "")),
            "also_wnpp": _bugs(stanza.get("Also-WNPP", "")),
            "removed_by": str(stanza.get("Ftpmaster", "")).strip() or None,
            "date": str(stanza.get("Date", "")).strip() or None,
        })
    return removals


def _binaries_line(line: str, number: int) -> tuple[str, str, str]:
    """``name_version [arch, arch]`` -> parts; split first, so the time is linear."""
    head, bracket, rest = line.partition("[")
    match = _BIN_822.fullmatch(head.strip())
    if not bracket or not rest.endswith("]") or "]" in rest[:-1] or match is None \
            or not head[-1:].isspace():
        raise ParseError(f"removals.822 stanza {number}: bad Binaries line {line[:200]!r}")
    return match.group(1), match.group(2), rest[:-1]


def _bugs(value: Any) -> list[int]:
    out = []
    for token in str(value or "").replace(",", " ").split():
        token = token.lstrip("#")
        if not token.isdigit():
            raise ParseError(f"not a bug number: {token[:40]!r}")
        out.append(int(token))
    return out
