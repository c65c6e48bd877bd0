"""Issue 9 finding 7: every mail parser takes time linear in its input.

Each case builds an input from our fixtures grown by a filler of ``n`` units,
parses it at 10 and 100 units, and asserts t(100)/t(10) < 20 (linear gives
about 10, quadratic about 100). CPU time of this process, best of a few runs,
so other jobs on the machine do not decide the result. The fillers are the
shapes that were slow: runs of blanks (removal rows), many encoded words
(RFC 2047), huge MIME headers, long free text.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest

from adapters import mailparse
from adapters.dak_mail import changes as ch
from adapters.dak_mail import parse_removals_822
from adapters.mail import parse_mail
from fixtures.dak_mail import generate
from gateway.errors import ParseError
from tests.dak_mail_helpers import fixture
from tests.test_debbugs_mail import bts_mail

pytestmark = pytest.mark.slow

#: Linear growth gives ~10; the bound leaves room for noise, quadratic gives ~100.
MAX_RATIO = 20
#: A 10-unit input slower than this is already far off linear: fail without the 100-unit run.
MAX_SMALL_SECONDS = 3.0
BLANKS = " " * 60


def cpu_time(parse: Callable[[bytes], object], data: bytes, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        with contextlib.suppress(ParseError):  # a refusal is an outcome too: its time counts
            parse(data)
        best = min(best, time.process_time() - started)
        if best > MAX_SMALL_SECONDS:
            break  # far off already; do not spend minutes repeating it
    return best


def insert(name: str, marker: bytes, filler: bytes) -> Callable[[int], bytes]:
    raw = fixture(name)
    assert raw.count(marker) >= 1, (name, marker)
    return lambda n: raw.replace(marker, marker + filler * n, 1)


def text_part(name: str, line: bytes) -> Callable[[int], bytes]:
    """Lines of text right after the first blank line (the body of a single-part fixture)."""
    return insert(name, b"\n\n", line)


def removal_row_blanks(n: int) -> bytes:
    raw = fixture("rm-bug1030001.eml")
    return raw.replace(b"oldlib-doc |      1.0-3 | all",
                       b"oldlib-doc | 1.0-3 | all" + b" " * (1000 * n) + b"x", 1)


def removals_822(n: int) -> str:
    stanza = ("Date: Tue, 14 Mar 2023 10:20:30 +0000\nFtpmaster: Ann Ftp\nSuite: unstable\n"
              "Sources:\n oldlib_1.0-3\nBinaries:\n" + "".join(
                  f" oldlib{i}_1.0-3 [amd64, i386]\n" for i in range(10)) +
              "Reason: RoQA;" + BLANKS + "dead upstream\n\n")
    return stanza * n


def removals_822_token(n: int) -> str:
    return ("Suite: unstable\nBinaries:\n " + "a_" * (500 * n) + "b\n")


def changes_text(n: int) -> str:
    text = generate.changes()
    return text.replace("Changes:\n", "Changes:\n" + (" line  with" + BLANKS + "blanks |\n") * n, 1)


def encoded_subject(n: int) -> str:
    return "Bug#881352: " + "=?utf-8?q?caf=C3=A9_?= " * (30 * n)


CASES: dict[str, tuple[Callable[[int], object], Callable[[object], object], int]] = {
    # name: (input of n units, parser, units of the small run)
    "removal mail, blanks in a row": (removal_row_blanks, parse_mail, 100),
    "removal mail, many rows": (insert("rm-bug1030001.eml", b"oldlib-doc |      1.0-3 | all\n",
                                       b"oldlib-x |      1.0-3 | all" + BLANKS.encode() + b"\n"),
                                parse_mail, 500),
    "announce, long changelog": (insert("announce-pre2014-latin1.eml", b"Changes:\n",
                                        b" entry  with" + BLANKS.encode() + b"| blanks\n"),
                                 parse_mail, 1000),
    "ACCEPTED (uploader)": (insert("accepted-uploader.eml", b"\n\n",
                                   b"Warning:" + BLANKS.encode() + b"x | y\n"), parse_mail, 1000),
    "is NEW": (text_part("new.eml", b"w" + BLANKS.encode() + b" | x |\n"), parse_mail, 1000),
    "REJECTED": (text_part("rejected-manual.eml", b"reason" + BLANKS.encode() + b"===\n"),
                 parse_mail, 1000),
    "prod comment": (text_part("prod.eml", b"comment" + BLANKS.encode() + b"x\n"),
                     parse_mail, 1000),
    "bug-close (dak)": (text_part("bug-close-latin1.eml", b"Done:" + BLANKS.encode() + b"x\n"),
                        parse_mail, 1000),
    "queue report": (text_part("queue-success.eml", BLANKS.encode() + b"file.deb\n"),
                     parse_mail, 1000),
    ".changes": (changes_text, lambda t: ch.parse_changes(str(t)), 1000),
    "removals.822 stanzas": (removals_822, lambda t: parse_removals_822(str(t)), 50),
    "removals.822 long token": (removals_822_token, lambda t: parse_removals_822(str(t)), 100),
    "RFC 2047 decoding": (encoded_subject, lambda t: mailparse.decode_rfc2047(str(t)), 100),
    "BTS mail, encoded subject": (lambda n: bts_mail(subject=encoded_subject(n // 10)),
                                  parse_mail, 90),
    "BTS mail, long body": (lambda n: bts_mail(body="text" + BLANKS + "x\n" * n * 20),
                            parse_mail, 1000),
    "header over the limit": (lambda n: bts_mail(subject="=?utf-8?q?a?= " * (10000 * n)),
                              parse_mail, 1),
    "huge MIME part header": (insert("announce-signed.eml", b'charset="utf-8"',
                                     b'; x="' + b"a" * 10000 + b'"'), parse_mail, 10),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_parse_time_grows_linearly(case: str) -> None:
    build, parse, units = CASES[case]
    small, large = build(units), build(units * 10)
    t_small = cpu_time(parse, small, runs=5)
    assert t_small < MAX_SMALL_SECONDS, f"{case}: {t_small:.2f} s for {len(small)} bytes"
    t_large = cpu_time(parse, large, runs=2)
    floor = 0.002  # below this the clock's resolution decides, not the parser
    ratio = t_large / max(t_small, floor)
    print(f"{case}: {len(small)} B {t_small * 1000:.1f} ms, {len(large)} B "
          f"{t_large * 1000:.1f} ms, ratio {ratio:.1f}")
    assert ratio < MAX_RATIO, f"{case}: {t_small:.4f} s -> {t_large:.4f} s (x{ratio:.0f})"


def test_header_limit_is_enforced_and_configurable(make_settings) -> None:  # type: ignore[no-untyped-def]
    raw = bts_mail(subject="Bug#881352: " + "x" * 70000)
    with pytest.raises(ParseError, match="max_header_bytes"):
        parse_mail(raw)
    [event] = parse_mail(raw, make_settings(mail={"max_header_bytes": 100000}))
    assert event.body["bug"] == 881352
    small = make_settings(mail={"max_header_bytes": 200})
    with pytest.raises(ParseError, match="'Subject'"):
        parse_mail(bts_mail(subject="Bug#881352: " + "y" * 300), small)
