import json
import uuid

import pytest

from gateway import envelope as env
from gateway.errors import EnvelopeError


def make(**over):
    e = env.build(topic="org.debian.dev.dak.package.accept", body={"source": "hebcal", "é": 1},
                  msg_id=env.msg_id_for("k"), timestamp=1700000000, i=1, username="dak",
                  seq_id=7, publisher="ftp-master")
    e.update(over)
    return e


def test_canonical_json_is_sorted_compact_ascii():
    text = env.canonical_json({"b": 1, "a": {"z": "é", "y": [1, 2]}})
    assert text == '{"a":{"y":[1,2],"z":"\\u00e9"},"b":1}'


def test_msg_id_is_uuid5_of_the_key_with_the_event_year():
    first = env.msg_id_for("dak:accept:hebcal_4.31-1_source.changes:unstable", 1661558400.0)
    again = env.msg_id_for("dak:accept:hebcal_4.31-1_source.changes:unstable", 1661558400.0)
    other = env.msg_id_for("dak:accept:hebcal_4.31-2_source.changes:unstable", 1661558400.0)
    assert first == again != other
    year, _, rest = first.partition("-")
    assert year == "2022"
    assert uuid.UUID(rest).version == 5


def test_encode_decode_round_trip():
    frames = env.encode(make())
    assert frames[0] == b"org.debian.dev.dak.package.accept"
    decoded = env.decode(list(frames))
    assert decoded == json.loads(frames[1])
    assert decoded["seq_id"] == 7


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([b"only-one"], "expected 2 frames"),
        ([b"org.debian.dev.dak.package.accept", b"{not json"], "not JSON"),
        ([b"org.debian.dev.dak.package.accept", b"[1]"], "JSON object"),
        ([b"org.debian.dev.dak.package.reject", env.encode(make())[1]], "frame 0 topic differs"),
        ([b"org.debian.dev.dak.package.accept", b'{"topic":"org.debian.dev.dak.package.accept"}'],
         "lacks"),
        ([b"org.debian.dev.dak.package.accept", b"\xff\xfe"], "not JSON"),
    ],
)
def test_decode_rejects_bad_frames(frames, message):
    with pytest.raises(EnvelopeError, match=message):
        env.decode(frames)


def test_decode_rejects_float_timestamp_and_bad_seq():
    with pytest.raises(EnvelopeError, match="timestamp"):
        env.check(make(timestamp=1.5))
    with pytest.raises(EnvelopeError, match="seq_id"):
        env.check(make(seq_id=0))


@pytest.mark.parametrize(
    "body",
    [{}, {"b": 1, "a": [1.5, None, True]}, {"é": "ü\u2028\x00", "nested": {"z": {"y": "\\"}}},
     [1, 2], "text", 12, None],
)
def test_fast_unsigned_encoding_equals_the_canonical_form(body):
    fields = dict(topic="org.debian.dev.dak.package.accept", body=body, msg_id="2026-x\"y",
                  timestamp=1700000000, i=3, username="ftp\u00e9", seq_id=9, publisher="p\\q")
    assert env.encode_unsigned(**fields) == env.canonical_json(env.build(**fields))
    fields["publisher_epoch"] = "e\u00e9\"0"
    assert env.encode_unsigned(**fields) == env.canonical_json(env.build(**fields))


@pytest.mark.parametrize("key", ["", "a", "dak:accept:x_1.0_source.changes:unstable", "é" * 300])
def test_msg_id_uuid_matches_the_standard_library(key):
    assert env.msg_id_for(key, 0).split("-", 1)[1] == str(uuid.uuid5(env.MSG_ID_NAMESPACE, key))


def test_received_frames_that_are_not_sane_json_are_envelope_errors() -> None:
    """A frame from the network nested 100,000 deep or holding NaN must be refused with
    an EnvelopeError (the subscriber counts and drops it), never a RecursionError."""
    from gateway.envelope import decode
    from gateway.errors import EnvelopeError

    deep = b'{"topic": "org.debian.dev.x.y.z", "msg": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for frame in (deep, b'{"topic": "org.debian.dev.x.y.z", "msg": NaN}', b"\xff\xfe"):
        with pytest.raises(EnvelopeError):
            decode([b"org.debian.dev.x.y.z", frame])
