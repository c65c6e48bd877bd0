"""gateway.canonical.dumps writes exactly the stdlib canonical encoding (what is stored,
sent, replayed and signed), over many bodies: generated ones and every fixture mail's."""

import json
import math
import random
from pathlib import Path

import pytest

from adapters.mail import parse_mail
from gateway import canonical, config, envelope
from gateway.errors import BusgateError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

STRINGS = ["", "plain", 'quote " and \\ backslash', "tab\tnew\nline\r\x00\x1f\x08\x0c",
           "del \x7f", "Jörg Müller", "日本語", "emoji \U0001f600 astral", "\u2028\u2029",
           "é\x7f\U0010ffff", "/slash", "<html>&amp;", "\ufeffbom"]
NUMBERS = [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, -2**63, 2**63, 2**64, -2**64 - 1, 10**30,
           0.0, -0.0, 1.5, 0.1, 1e-5, 1e-7, 1e15, 1e16, 1e22, 1.2345678901234568e17,
           5e-324, 1.7976931348623157e308, 123456.789, -2.5e-10, True, False, None]


def generate(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth < 5 and roll < 0.25:
        return {rng.choice(STRINGS) + str(rng.randrange(5)): generate(rng, depth + 1)
                for _ in range(rng.randrange(6))}
    if depth < 5 and roll < 0.4:
        return [generate(rng, depth + 1) for _ in range(rng.randrange(6))]
    if roll < 0.7:
        return rng.choice(STRINGS) + chr(rng.randrange(0x20, 0x3000))
    return rng.choice(NUMBERS)


def test_equal_to_the_stdlib_over_generated_bodies():
    rng = random.Random(16)
    float_free = 0
    for _ in range(5000):
        body = {"k": generate(rng)}
        assert canonical.dumps(body) == canonical.STDLIB.encode(body), body
        float_free += not canonical._has_float(body)
    assert float_free > 1000  # the fast path was taken many times


@pytest.mark.parametrize("value", [
    {"s": s} for s in STRINGS] + [{"n": n} for n in NUMBERS] + [
    {"z": 1, "a": {"y": [1, {"b": None}], "x": "é"}, "é": 2, "e": 3, "\U0001f600": 4},
    {"nested": [[[[[]]]]], "empty": {}}, ("tuple", 1), {"lone": "\udcff surrogate"},
    {1: "int key"}, {"big": [2**70, "é"]},
])
def test_equal_on_edge_values(value):
    assert canonical.dumps(value) == canonical.STDLIB.encode(value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {"a": [1, math.nan]}])
def test_nan_and_infinity_are_refused_as_the_stdlib_refuses_them(bad):
    with pytest.raises(ValueError):
        canonical.dumps(bad)


def test_equal_on_every_fixture_mails_bodies():
    settings = config.Settings().with_section("dak", signatures="ignore")
    count = 0
    for path in sorted(FIXTURES.rglob("*.eml")):
        try:
            events = parse_mail(path.read_bytes(), settings)
        except BusgateError:  # hostile fixtures are refused: they have no bodies
            events = []
        for event in events:
            assert canonical.dumps(event.body) == canonical.STDLIB.encode(event.body), path
            count += 1
    assert count > 20


def test_the_stored_envelope_is_the_canonical_form():
    body = {"name": "Jörg", "n": 2**70, "f": 1e-5, "list": ["\U0001f600"]}
    text = envelope.encode_unsigned(topic="org.debian.dev.a.b", body=body, msg_id="2026-x",
                                    timestamp=1, i=1, username="u", seq_id=1, publisher="p",
                                    publisher_epoch="e")
    assert text == canonical.STDLIB.encode(json.loads(text))


def test_bounded_decoding_gives_the_stdlib_value_and_errors():
    """gateway.jsonbounds reads with orjson when that gives json's exact value (ints over
    64 bits, floats, surrogates and refusals are left to the stdlib decoder)."""
    from gateway import jsonbounds
    from gateway.errors import ParseError

    rng = random.Random(11)
    texts = [canonical.STDLIB.encode({"k": generate(rng)}) for _ in range(3000)]
    texts += ['{"big": 123456789012345678901234567890, "n": 18446744073709551616}',
              '{"lone": "\\udcff", "pair": "\\ud83d\\ude00"}', '{"a": 1, "a": 2}', "-0",
              '{"x": 1E5}', '["\\u00e9", "é"]']
    for text in texts:
        got = jsonbounds.loads(text.encode(), 64)
        assert repr(got) == repr(json.loads(text)), text  # same types, not just equal
    for bad in ("NaN", '{"a": Infinity}', "[1e400]", '{"a": 1} x', "[1,", b"\xff"):
        with pytest.raises((ValueError, ParseError)):
            jsonbounds.loads(bad, 64)


def _texts(seed: int, count: int) -> list[str]:
    """JSON texts as writers make them: canonical, unsorted with UTF-8, and indented."""
    rng = random.Random(seed)
    texts = []
    for n in range(count):
        value = {"k": generate(rng), "n": n}
        texts.append([canonical.STDLIB.encode(value),
                      json.dumps(value, ensure_ascii=False),
                      json.dumps(value, indent=1)][n % 3])
    return texts


def test_a_float_free_parse_encodes_to_the_stdlib_bytes():
    """What the spool worker and ``busgate publish`` now do (parse once, look for floats
    once, encode without looking again) writes exactly what the stdlib writes, and the
    flag says "no float" only for values without one."""
    from gateway import jsonbounds

    flagged = 0
    edges = ['{"big": 123456789012345678901234567890}', '{"lone": "\\udcff"}',
             '{"del": "\\u007f", "e": "é"}', '{"x": 1E5}', '{"f": 0.5}',
             '{"astral": "\\ud83d\\ude00"}']
    for text in [*_texts(17, 4000), *edges]:
        value, float_free = jsonbounds.loads_flagged(text, 64)
        expected = canonical.STDLIB.encode(value)
        assert repr(value) == repr(json.loads(text)), text
        if float_free:
            flagged += 1
            assert not canonical._has_float(value), text
            assert canonical.dumps_float_free(value) == expected, text
        assert canonical.dumps(value) == expected, text
    assert flagged > 1000


def test_a_parsed_spool_record_makes_the_envelope_an_in_process_event_makes():
    """The worker's envelope for a spool record (body encoded without a second walk) is
    byte for byte the envelope of the same event built in-process."""
    from gateway import ingest
    from gateway.envelope import EnvelopeFactory
    from gateway.event import Event

    settings = config.Settings().with_section("dak", signatures="ignore")
    bodies = [event.body for path in sorted(FIXTURES.rglob("*.eml"))[:40]
              for event in _parsed(path, settings)]
    bodies += [json.loads(text) for text in _texts(23, 600)]
    records = [Event("svc", "obj", "done", key=f"k{n}", body=body).to_dict()
               for n, body in enumerate(bodies)]
    raw = b"".join(json.dumps(record, ensure_ascii=n % 2 == 0).encode() + b"\n"
                   for n, record in enumerate(records))
    parsed = ingest.parse_events(raw)
    assert sum(event.float_free for event in parsed) > len(parsed) // 2
    fast, plain = EnvelopeFactory("org.x.dev", "p", "u"), EnvelopeFactory("org.x.dev", "p", "u")
    for seq, (event, record) in enumerate(zip(parsed, records, strict=True), 1):
        in_process = Event(**{**record, "body": json.loads(json.dumps(record["body"]))})
        assert not in_process.float_free
        assert fast.make(event, seq, 1700000000) == plain.make(in_process, seq, 1700000000)


def test_replacing_the_body_drops_the_float_free_mark():
    import dataclasses

    from gateway.event import Event

    record = {"service": "a", "object": "b", "event": "c", "key": "k", "body": {"x": 1}}
    event = Event.from_dict(record, float_free=True)
    assert event.float_free and event == Event.from_dict(record)
    changed = dataclasses.replace(event, body={"x": 0.1})
    assert not changed.float_free
    assert '"msg":{"x":0.1}' in envelope.EnvelopeFactory("org.x.dev", "p", "u").make(
        changed, 1, 1)[2]


def _parsed(path: Path, settings: config.Settings) -> list:
    try:
        return parse_mail(path.read_bytes(), settings)
    except BusgateError:
        return []


def test_bounded_decoding_of_damaged_texts_agrees_with_the_stdlib():
    """Texts a byte or three away from JSON (control characters, bad escapes, lone
    surrogates, leading zeros, trailing commas...): the fast decoder gives json's value
    or leaves the decision to it, never a different value."""
    from gateway import jsonbounds
    from gateway.errors import ParseError

    rng = random.Random(5)
    value = {"a": [1, "xé\U0001f600", {"b": None, "c": True}], "d": 'q\\"', "e": -12}
    bases = [json.dumps(value), json.dumps(value, ensure_ascii=False)]
    alphabet = [*'{}[],:"\\ -+.eE0123456789abtnrfu/\x00\x01\t\n\x7fé', "\ud800"]
    decided = 0
    for _ in range(20000):
        chars = list(rng.choice(bases))
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(chars))
            roll = rng.random()
            if roll < 0.4:
                chars.insert(at, rng.choice(alphabet))
            elif roll < 0.7:
                del chars[at]
            else:
                chars[at] = rng.choice(alphabet)
        text = "".join(chars)
        try:
            expected = repr(json.loads(text))
        except ValueError:
            expected = None
        try:
            got = repr(jsonbounds.loads(text, 64))
        except (ValueError, ParseError):
            got = None
        assert got == expected, text
        decided += expected is not None
    assert decided > 1000


@pytest.mark.parametrize("without", ["msgspec", "msgspec and orjson"])
def test_without_the_fast_libraries_decoding_and_flags_stay_right(monkeypatch, without):
    """msgspec and orjson are extras (``fast``): without them the same values and flags
    come from orjson or the stdlib, and a float-free value still encodes to json's bytes."""
    import orjson

    from gateway import jsonbounds

    monkeypatch.setattr(jsonbounds, "_fast", (None, ()))
    # (what _fast_decoder sets when msgspec is missing)
    monkeypatch.setattr(jsonbounds, "orjson", None if "orjson" in without else orjson)
    flagged = 0
    for text in _texts(29, 1500):
        value, float_free = jsonbounds.loads_flagged(text, 64)
        assert repr(value) == repr(json.loads(text)), text
        if float_free:  # never claimed wrongly; never without a fast library
            assert not canonical._has_float(value) and jsonbounds.orjson is not None
            flagged += 1
            assert canonical.dumps_float_free(value) == canonical.STDLIB.encode(value)
    assert flagged > 300 or jsonbounds.orjson is None


def test_the_escape_agrees_with_json_on_backslashes_and_every_plane() -> None:
    """Strings of backslashes, escape-like letters, DEL, Latin-1, BMP and astral characters
    and lone surrogates: the same text as json's, as str and as bytes, with the cache of
    escaped runs in use (each string is encoded twice)."""
    rng = random.Random(61)
    pieces = ["a", "\\", "x", "U", "u", "0", "f", '"', "\x7f", "\x80", "\xe9", "\xff",
              "\u0100", "\u20ac", "\uffff", "\U0001f600", "\U0010ffff", "\n", "\x00",
              "\udcff"]
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(9)))
        value = {"k" + text[:2]: [text, {"v": text}]}
        expected = canonical.STDLIB.encode(value)
        assert canonical.dumps_float_free(value) == expected, value
        assert canonical.dumps_float_free_bytes(value) == expected.encode(), value


def test_the_cache_of_escaped_runs_is_bounded(monkeypatch) -> None:
    """At most ESCAPE_CACHE runs, none longer than ESCAPE_CACHE_RUN characters, and what
    is found there is the escape json writes."""
    monkeypatch.setattr(canonical, "ESCAPE_CACHE", 16)
    monkeypatch.setattr(canonical, "_escaped_runs", {})
    for n in range(200):
        run = chr(0xe0 + n % 30) + chr(0x4e00 + n) + "\U0001f600" * (n % 3)
        value = {"a": f"x{run}y", "long": "\u00e9" * (canonical.ESCAPE_CACHE_RUN + n)}
        for _ in range(2):
            assert canonical.dumps_float_free(value) == canonical.STDLIB.encode(value)
        assert 0 < len(canonical._escaped_runs) <= 16
        assert max(map(len, canonical._escaped_runs)) <= canonical.ESCAPE_CACHE_RUN
    for run, escaped in canonical._escaped_runs.items():
        assert escaped == json.dumps(run)[1:-1]


def test_the_escaped_set_is_every_code_point_from_del_up() -> None:
    """The pattern of what json escapes (written as a negated class: the range form costs
    milliseconds to compile at every start-up) matches exactly DEL and all above."""
    text = "".join(map(chr, range(0x110000)))
    found = [m.start() for m in canonical._NON_ASCII.finditer(text)]
    assert found == list(range(0x7f, 0x110000))
