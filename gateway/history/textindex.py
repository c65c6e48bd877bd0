"""The SQLite history's ``contains`` index: trigrams without positions, and the exact
check of what they find (``007_fts_detail_none.sql``).

``messages_text`` is a contentless FTS5 trigram table with ``detail=none``: it knows
which messages hold a trigram, not where. A term of 3 characters is one trigram, found
exactly; a longer one is asked as the AND of its trigrams (FTS5 refuses phrases without
positions), which also finds messages holding them apart (``libc6``: ``lib`` here,
``bc6`` there). Each such candidate is checked against ``messages_fold``, the message's
text (:func:`gateway.history.records.text_of`) folded as the index folds it, with
``instr``: SQLite's own code, no Python called per candidate.

Why not positions (``detail=full``, the index before 007): at 1,000,000 stored messages
the index was the largest single cost of the recorder's ingest, ~64 of ~200 us of CPU
a message. Without them, at 1,000,000 (bench/history_at_scale.py, trees side by side
on copies of one history, load 0.7-2.0, four runs): batched ingest x1.19-1.32 wall,
x1.20-1.27 CPU; the index 957 -> 235 MB, plus 388 MB of folded text.

Why the folded text is stored, and not read from the envelope when checking: at
1,000,000, a frequent term's count (10,001 matches checked) takes 17-33 ms with
``instr`` on ``messages_fold``, 100-237 ms with a Python SQL function decoding each
envelope (``text_of``, :func:`fold`): ~10x, and past ``count_budget_ms`` (150), so such
counts would be cut; the candidates alone, unchecked, 7-11 ms. Writing it costs little
at 1,000,000: the same CPU a message within noise, the median batch 7% slower (the
same tree without it, side by side).

Folding is the index's own: FTS5's trigram tokenizer (``case_sensitive=0``) folds each
character alone, to one character, by SQLite's Unicode tables. :func:`fold` uses the
same table, read from SQLite itself (:func:`_fold_table`), so a term is found in the
folded text exactly when the index's positions would have found it: ``Jörg``/``JÖRG``,
Greek (a final sigma is a sigma) and Cyrillic alike. Values of a body are one a line in
the text and a term holds no control character, so a term never spans two values, as
before (the trigrams of one may be found across two: the check tells them apart).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from gateway import jsonbounds
from gateway.envelope import MAX_RECEIVED_DEPTH

#: Characters in a trigram.
TRIGRAM = 3
#: Past the last cased character (Adlam, U+1E943): where :func:`_fold_table` stops looking.
CASED_END = 0x20000
#: Rows written per statement by :func:`rebuild`.
REBUILD_BATCH = 2000

#: Facet kinds (``facets.kind`` in the index file): a message's topic, its category.
TOPIC, CATEGORY = 0, 1
#: Where facet markers' characters are (Supplementary Private Use Area-A, U+F0000).
FACET_PLANE = 0xF0000
#: The base of a facet id's two characters: U+FFFFE and U+FFFFF are noncharacters.
FACET_BASE = 0xFFFE
#: Facet ids with a marker: 1 to FACET_BASE ** 2 - 1 (4.3 billion topics).
FACET_IDS = FACET_BASE ** 2
#: SQL of :func:`facet_marker` for ``{kind}`` and ``{id}`` (an id under FACET_IDS).
FACET_SQL = (f"char({FACET_PLANE} + {{kind}}, {FACET_PLANE} + {{id}} / {FACET_BASE},"
             f" {FACET_PLANE} + {{id}} % {FACET_BASE})")
#: The facets' plane, and the character :func:`indexed` puts in its place in texts.
_FACET_CHARS = re.compile("[\U000F0000-\U000FFFFF]")
REPLACEMENT = "\ufffd"
_AMBIGUOUS = re.compile("[\U000F0000-\U000FFFFF\ufffd]")
#: What ``indexfile`` tests a text with before calling :func:`indexed` (GLOB: in C).
FACET_GLOB = "*[\U000F0000-\U000FFFFF]*"

_TABLE: dict[int, int] | None = None
_TABLE_LOCK = threading.Lock()


def _fold_table() -> dict[int, int]:
    """Code point -> what the trigram tokenizer folds it to, for every cased character
    (the ones Python knows a case mapping for: a superset of SQLite's older tables) and
    the two that SQLite reads as U+FFFD, when that is another; read once per process
    from an in-memory FTS5 table of this SQLite library (``fts5vocab`` lists the folded
    trigrams): ~0.13 s."""
    global _TABLE
    with _TABLE_LOCK:
        if _TABLE is not None:
            return _TABLE
        cased = [c for c in range(0x80, CASED_END)
                 if not 0xD800 <= c <= 0xDFFF
                 and (chr(c).lower() != chr(c) or chr(c).upper() != chr(c)
                      or chr(c).casefold() != chr(c))]
        cased += [0xFFFE, 0xFFFF]  # SQLite reads these as U+FFFD (READ_UTF8)
        db = sqlite3.connect(":memory:")
        try:
            db.execute("CREATE VIRTUAL TABLE t USING fts5 (body, tokenize = 'trigram')")
            db.execute("CREATE VIRTUAL TABLE v USING fts5vocab (t, 'instance')")
            db.executemany("INSERT INTO t (rowid, body) VALUES (?, ?)",
                           [(c, chr(c) * TRIGRAM) for c in cased])
            table = {doc: ord(term[0]) for term, doc in db.execute("SELECT term, doc FROM v")
                     if len(term) == TRIGRAM and ord(term[0]) != doc}
        finally:
            db.close()
        _TABLE = table
        return table


def fold(text: str) -> str:
    """``text`` folded as the trigram index folds it (one character for one): ASCII
    letters by ``bytes.lower`` (it touches nothing else), each run of other characters
    by the table. Why not ``str.translate`` of the whole text: ~0.1 us a character, 36 us
    a 300-character body with one accent; this is ~9 us, and an ASCII text (96% of the
    bench's) ~0.5 us."""
    if text.isascii():
        return text.lower()
    low = text.encode("utf-8", "surrogatepass").lower()
    return _NON_ASCII.sub(_fold_run, low).decode("utf-8", "surrogatepass")


_NON_ASCII = re.compile(rb"[\x80-\xff]+")


def _fold_run(found: re.Match[bytes]) -> bytes:
    return (found[0].decode("utf-8", "surrogatepass").translate(_fold_table())
            .encode("utf-8", "surrogatepass"))


def indexed(folded: str) -> str:
    """A folded text as the index holds it: the facets' plane replaced by U+FFFD, so
    that no text's trigram is a facet's marker (the check against the folded text tells
    the characters apart again: :func:`recheck_terms`)."""
    return _FACET_CHARS.sub(REPLACEMENT, folded)


def trigrams(term: str) -> list[str]:
    """The distinct trigrams of ``term`` (folded and :func:`indexed`: the index would
    hold them the same)."""
    folded = indexed(fold(term))
    return list(dict.fromkeys(folded[i:i + TRIGRAM] for i in range(len(folded) - TRIGRAM + 1)))


def facet_marker(kind: int, facet_id: int) -> str | None:
    """The trigram that stands for a message's topic (``kind`` :data:`TOPIC`) or category
    (:data:`CATEGORY`) of id ``facet_id`` in the text index, in columns of their own;
    None past :data:`FACET_IDS` (such a facet is not indexed: its queries take the plans
    that read the message's row). Three characters of Unicode's private use plane 15:
    the kind, then the id in base :data:`FACET_BASE` (below the plane's two
    noncharacters). No text's trigram is one: texts are :func:`indexed`. Same as
    ``indexfile``'s SQL (:data:`FACET_SQL`)."""
    if not 0 < facet_id < FACET_IDS:
        return None
    return (chr(FACET_PLANE + kind) + chr(FACET_PLANE + facet_id // FACET_BASE)
            + chr(FACET_PLANE + facet_id % FACET_BASE))


def facet_match(kind: int, facet_ids: Sequence[int]) -> str:
    """The FTS5 query part finding the messages of any of ``facet_ids`` (all under
    :data:`FACET_IDS`); none: one that finds nothing (id 0 is never given)."""
    markers = [facet_marker(kind, i) for i in facet_ids] or \
        [chr(FACET_PLANE + kind) + chr(FACET_PLANE) * 2]
    return "(" + " OR ".join(_quoted(m) for m in markers if m) + ")"


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def match(terms: Sequence[str]) -> str:
    """The FTS5 query finding every message that holds one of ``terms`` (and others: see
    :func:`recheck_terms`). A term under 3 characters has no trigram and finds nothing,
    as with the index before 007 (``/raw`` refuses one anyway)."""
    parts = []
    for term in terms:
        grams = trigrams(term)
        parts.append("(" + " AND ".join(map(_quoted, grams)) + ")" if grams else _quoted(term))
    return " OR ".join(parts)


def recheck_terms(terms: Sequence[str]) -> list[str] | None:
    """The folded terms a candidate's folded text must hold one of (``instr``), or None
    when the index's candidates are exact: every term of 3 characters (one trigram, or
    none under 3, which finds nothing) holding no character that :func:`indexed`
    replaces, nor its replacement (such a term's trigram is also another's)."""
    if all(len(term) <= TRIGRAM and not _AMBIGUOUS.search(term) for term in terms):
        return None
    return [fold(term) for term in terms if len(term) >= TRIGRAM]


def recheck_sql(terms: Sequence[str], id_expr: str) -> tuple[str, list[Any]]:
    """`` AND ...`` keeping the candidates (message ids ``id_expr``) that hold one of
    ``terms``, with its parameters; ``("", [])`` when the index's candidates are exact."""
    folded = recheck_terms(terms)
    if folded is None:
        return "", []
    tests = " OR ".join(["instr(f.text, ?) > 0"] * len(folded))
    return (f" AND EXISTS (SELECT 1 FROM messages_fold f WHERE f.id = {id_expr}"  # noqa: S608
            f" AND ({tests}))", folded)


def rebuild(db: sqlite3.Connection) -> int:
    """Fill ``messages_fold`` (empty) from every stored envelope, in ``db``'s open
    transaction (007: the old index has no text to read back), in id order; how many
    messages. ``messages_text`` is left empty: 008 moves it to a file of its own, which
    is filled from ``messages_fold`` (:mod:`gateway.history.indexfile`)."""
    from gateway.history.records import text_of

    done, last = 0, 0
    while True:
        rows = db.execute("SELECT id, envelope FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                          (last, REBUILD_BATCH)).fetchall()
        if not rows:
            return done
        folded = []
        for row_id, envelope in rows:
            body = jsonbounds.loads(envelope, MAX_RECEIVED_DEPTH)
            folded.append((row_id, fold(text_of(body.get("msg") if type(body) is dict
                                                else None))))
        db.executemany("INSERT INTO messages_fold (id, text) VALUES (?, ?)", folded)
        done += len(rows)
        last = rows[-1][0]
