"""Is this mail really from dak? Check its OpenPGP signature with gpgv against a keyring.

dak signs every mail it sends (``Dinstall::Mail-Signature-Key``, since 2022) as
RFC 3156 ``multipart/signed``: part 1 is the text, part 2 a detached signature
over part 1's exact bytes with CRLF line ends. An inline clear-signed body is
accepted too. Only what the signature covers is parsed afterwards (the signed
part, or the text gpgv says was signed), so text added around a good signature
never reaches an event; the uploader's own clear-signed ``.changes`` quoted
inside the body proves nothing about the mail and is not looked at here.

gpgv is Debian's own tool for exactly this (dak and python-debian call it): it
checks against plain keyring files with no trust database or agent, and its
``--status-fd`` lines are a stable machine interface. It runs in a fresh
temporary home with a timeout, on input already bounded by ``mail.max_size``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from adapters import mailparse

ARMOR_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----"

#: ``signature.status`` values (``valid`` is the only one ``require`` lets through).
VALID = "valid"
MISSING = "missing"  # no signature at all
BAD = "bad"  # the signed data was changed, or the signature is malformed
NO_KEY = "no-key"  # signed, but by a key not in the keyring
EXPIRED = "expired"  # expired signature or key
REVOKED = "revoked"
ERROR = "error"  # gpgv could not run or took too long; no keyring configured
UNCHECKED = "unchecked"  # dak.signatures = "ignore"

#: gpgv status keywords that make a signature not good, and what they mean.
_FAILURES = {"BADSIG": BAD, "ERRSIG": NO_KEY, "NO_PUBKEY": NO_KEY, "EXPSIG": EXPIRED,
             "EXPKEYSIG": EXPIRED, "REVKEYSIG": REVOKED, "NODATA": BAD,
             "UNEXPECTED": BAD, "BADARMOR": BAD}


#: Most gpgv output (status and messages) kept; gpgv writes a few hundred bytes.
_MAX_OUTPUT = 64 * 1024


@dataclass(frozen=True)
class Trust:
    """What the operator configured (``[dak]``): policy, keyrings, the tool and its bound."""

    mode: str = "require"
    keyrings: tuple[str, ...] = ()
    gpgv: str = "gpgv"
    timeout: float = 10.0


@dataclass(frozen=True)
class Verdict:
    status: str
    fingerprint: str | None = None
    detail: str = ""
    #: The text the signature covers (set only when ``status`` is valid).
    signed_text: str | None = None

    def body(self) -> dict[str, str | None]:
        """The ``signature`` object of event bodies."""
        return {"status": self.status, "fingerprint": self.fingerprint}


def verify(message: Message, raw: bytes, trust: Trust) -> Verdict:
    """Check the mail's signature; never raises (a failure is a verdict)."""
    if trust.mode == "ignore":
        return Verdict(UNCHECKED)
    detached = _detached_parts(message, raw)
    if detached is not None:
        data, signature, signed_part = detached
        if not trust.keyrings:
            return Verdict(ERROR, detail="no keyring configured (dak.keyring)")
        verdict = _gpgv(trust, [("sig.asc", signature), ("data", data)])
        if verdict.status != VALID:
            return verdict
        return Verdict(VALID, verdict.fingerprint, signed_text=mailparse.text_body(signed_part))
    text = mailparse.text_body(message)
    if text.lstrip().startswith(ARMOR_SIGNED):
        if not trust.keyrings:
            return Verdict(ERROR, detail="no keyring configured (dak.keyring)")
        return _gpgv(trust, [("mail.asc", text.encode("utf-8", "surrogateescape"))],
                     output=True)
    return Verdict(MISSING, detail="the mail is not signed")


def _detached_parts(message: Message, raw: bytes) -> tuple[bytes, bytes, Message] | None:
    """(signed bytes as CRLF, signature, the signed part parsed from exactly those bytes)
    of a top-level multipart/signed mail.

    The signed part handed to the parser is re-parsed from the bytes gpgv checks,
    never taken from the parser's view of the whole mail: a boundary look-alike
    line must not let the verified bytes and the parsed text differ.
    """
    if message.get_content_type() != "multipart/signed":
        return None
    boundary = message.get_boundary()
    parts = message.get_payload()
    if not boundary or not isinstance(parts, list) or len(parts) != 2:
        return None
    signature = parts[1].get_payload(decode=True)
    if not isinstance(signature, bytes):
        return None
    data = _first_part_bytes(raw, boundary.encode("ascii", "replace"))
    if data is None:
        return None
    return data.replace(b"\n", b"\r\n"), signature, mailparse.parse(data)


def _first_part_bytes(raw: bytes, boundary: bytes) -> bytes | None:
    """Part 1 exactly as sent (LF line ends), between the first two delimiter lines.

    A delimiter line is ``--boundary`` plus optional blanks (RFC 2046 5.1.1); the
    line end before it belongs to it. One pass over ``raw``.
    """
    text = raw.replace(b"\r\n", b"\n")
    head_end = text.find(b"\n\n")
    if head_end < 0:
        return None
    delimiters = _delimiter_lines(text, boundary, head_end + 1)
    first = next(delimiters, None)
    second = next(delimiters, None)
    if first is None or second is None or first[1] or second[1]:
        return None  # no part 1, or a close delimiter where a part boundary belongs
    start = text.find(b"\n", first[0] + 1)
    return text[start + 1:second[0]] if 0 <= start < second[0] else None


def _delimiter_lines(text: bytes, boundary: bytes, start: int):  # type: ignore[no-untyped-def]
    """(offset of the line end before it, is the close delimiter) of each delimiter line."""
    needle = b"\n--" + boundary
    position = text.find(needle, start)
    while position >= 0:
        line_end = text.find(b"\n", position + 1)
        rest = text[position + len(needle):line_end if line_end >= 0 else len(text)]
        closing = rest.startswith(b"--")
        if not rest[2 if closing else 0:].strip(b" \t"):
            yield position, closing
        position = text.find(needle, position + 1)


def _gpgv(trust: Trust, files: list[tuple[str, bytes]], output: bool = False) -> Verdict:
    with tempfile.TemporaryDirectory(prefix="busgate-gpgv-") as home:
        paths = []
        for name, content in files:
            path = Path(home) / name
            path.write_bytes(content)
            paths.append(str(path))
        out_path = Path(home) / "signed.txt"
        command = [trust.gpgv, "--homedir", home, "--status-fd", "1"]
        for keyring in trust.keyrings:
            command += ["--keyring", os.path.abspath(keyring)]
        if output:
            command += ["--output", str(out_path)]
        command += paths
        try:
            returncode, stdout, stderr = _run(command, trust.timeout)
        except subprocess.TimeoutExpired:
            return Verdict(ERROR, detail=f"gpgv took longer than {trust.timeout:g} s")
        except OSError as exc:
            return Verdict(ERROR, detail=f"cannot run {trust.gpgv}: {exc.strerror}")
        verdict = _read_status(stdout.decode("ascii", "replace"), returncode,
                               stderr.decode("utf-8", "replace"))
        if verdict.status == VALID and output:
            signed = out_path.read_bytes() if out_path.exists() else b""
            text = mailparse.normalize_newlines(mailparse.decode_bytes(signed, "utf-8"))
            return Verdict(VALID, verdict.fingerprint, signed_text=text)
        return verdict


def _run(command: list[str], timeout: float) -> tuple[int, bytes, bytes]:
    """Run gpgv in its own process group; on timeout the whole group is killed (no orphan
    holding our pipes open) and :class:`subprocess.TimeoutExpired` raised."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        return proc.returncode, stdout[:_MAX_OUTPUT], stderr[:_MAX_OUTPUT]


def _read_status(status: str, returncode: int, stderr: str) -> Verdict:
    """Good only when every signature is GOODSIG+VALIDSIG, none failed, and gpgv exited 0."""
    new = good = 0
    fingerprint = None
    failure = None
    for line in status.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "[GNUPG:]":
            continue
        keyword = words[1]
        if keyword == "NEWSIG":
            new += 1
        elif keyword == "GOODSIG":
            good += 1
        elif keyword == "VALIDSIG" and len(words) > 2:
            fingerprint = fingerprint or words[2]
        elif keyword in _FAILURES and failure is None:
            failure = _FAILURES[keyword]
    if failure is None and returncode == 0 and good >= 1 and good >= new and fingerprint:
        return Verdict(VALID, fingerprint)
    detail = " ".join(stderr.split())[:300] or f"gpgv exited {returncode}"
    return Verdict(failure or BAD, fingerprint if failure != NO_KEY else None, detail=detail)
