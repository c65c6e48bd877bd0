"""How ``busgate tail`` shows and filters messages: gateway/display.py, gateway/msgfilter.py."""

from __future__ import annotations

import io
import time

import pytest

from gateway import display, msgfilter
from gateway.cli import tail
from gateway.messages import MAX_HEADER_NAMES, Message, TypeIndex, headers
from tests.tail_types import TYPES, UploadDone

INDEX = TypeIndex(TYPES)
STAMP = 1_700_000_000


def envelope(body, topic="org.debian.dev.tailtest.upload.done", **extra):
    return {"topic": topic, "msg": body, "timestamp": STAMP, "msg_id": "2023-x",
            "i": 1, "username": "busgate", "seq_id": 7, "publisher": "host", **extra}


UPLOAD = {"user": "alice", "package": "hebcal", "version": "4.31-1"}


def terse(env, index=INDEX, colour=False):
    out = io.StringIO()
    tail.write(out, env, "terse", colour=colour, index=index)
    return out.getvalue()


def test_terse_line_is_time_topic_tail_summary_link(monkeypatch):
    monkeypatch.setenv("TZ", "XYZ-05:30")  # local time, not UTC: 22:13:20 UTC + 5:30
    time.tzset()
    try:
        line = terse(envelope(UPLOAD))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert line == ("03:43:20 tailtest.upload.done alice uploaded hebcal 4.31-1 "
                    "https://tracker.example.org/pkg/hebcal\n")


def test_terse_without_a_type_uses_the_base_summary_and_no_link():
    line = terse(envelope({"source": "hebcal", "version": "4.31-1", "nested": {"a": 1}},
                          topic="org.debian.dev.dak.package.accept"))
    assert line.split(" ", 1)[1] == "dak.package.accept source=hebcal version=4.31-1\n"


def test_a_type_failing_on_a_malformed_body_falls_back_to_the_base_summary():
    line = terse(envelope({"package": "hebcal"}))  # no user, no version: KeyError in summary
    assert line.split(" ", 1)[1] == "tailtest.upload.done package=hebcal\n"


def test_control_characters_in_a_message_are_shown_escaped_not_interpreted():
    hostile = {**UPLOAD, "user": "a\x1b]0;owned\x07\x1b[2J\u202eb\x9b"}
    line = terse(envelope(hostile, topic="org.debian.dev.tailtest.upload.done"))
    assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
    assert "\x9b" not in line
    assert "a\\x1b]0;owned\\x07\\x1b[2J\\u202eb\\x9b uploaded hebcal" in line
    assert line.count("\n") == 1


def test_summary_newlines_never_split_the_line():
    line = terse(envelope({"log": "one\ntwo\r\nthree"}, topic="org.debian.dev.x.y.z"))
    assert line.endswith("x.y.z log=one two three\n")


def test_colour_marks_the_service_and_link_only_when_asked():
    plain = terse(envelope(UPLOAD), colour=False)
    coloured = terse(envelope(UPLOAD), colour=True)
    assert "\x1b" not in plain
    colour = display.service_colour("tailtest")
    assert f"{colour}tailtest.upload.done{display.RESET}" in coloured
    assert f"{display.LINK}https://tracker.example.org/pkg/hebcal{display.RESET}" in coloured
    # Stripped of its escapes, the coloured line is the plain one.
    import re
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain


def test_service_colour_is_stable_and_tells_services_apart():
    services = ["dak", "debbugs", "wanna-build", "git", "logger", "tailtest"]
    colours = {s: display.service_colour(s) for s in services}
    assert colours == {s: display.service_colour(s) for s in services}
    assert all(c in display.SERVICE_PALETTE for c in colours.values())
    assert len(set(colours.values())) >= 4


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("choice", "environ", "tty", "expected"), [
    ("auto", {}, True, True),
    ("auto", {}, False, False),              # a pipe or file gets no escapes
    ("auto", {"NO_COLOR": "1"}, True, False),
    ("auto", {"NO_COLOR": "0"}, True, False),  # any non-empty value
    ("auto", {"NO_COLOR": ""}, True, True),    # empty means unset (no-color.org)
    ("auto", {"TERM": "dumb"}, True, False),
    ("always", {"NO_COLOR": "1"}, False, True),  # an explicit option beats the environment
    ("never", {}, True, False),
])
def test_colour_choice_follows_no_color_and_the_option(choice, environ, tty, expected):
    stream = _Tty() if tty else io.StringIO()
    assert display.use_colour(choice, stream, environ) is expected


def test_color_option_accepts_a_bare_flag_and_the_british_spelling():
    import argparse

    parser = argparse.ArgumentParser()
    tail.add_arguments(parser)
    assert parser.parse_args([]).color == "auto"
    assert parser.parse_args(["--color"]).color == "always"
    assert parser.parse_args(["--color", "--terse"]).color == "always"
    assert parser.parse_args(["--colour=never"]).color == "never"
    with pytest.raises(SystemExit):
        parser.parse_args(["--color=sometimes"])


def test_pretty_shows_the_summary_of_a_typed_message_and_marks_replay():
    out = io.StringIO()
    tail.write(out, envelope(UPLOAD), "pretty", replayed=True, colour=False, index=INDEX)
    head, about, *body = out.getvalue().splitlines()
    assert head.endswith("org.debian.dev.tailtest.upload.done (host#7, 2023-x) [replayed]")
    assert about == "  alice uploaded hebcal 4.31-1 https://tracker.example.org/pkg/hebcal"
    assert body[0] == "    {" and '      "package": "hebcal",' in body
    out = io.StringIO()
    tail.write(out, envelope({"a": 1}, topic="org.debian.dev.x.y.z"), "pretty", index=INDEX)
    assert out.getvalue().splitlines()[1] == "    {"  # the base type adds no summary line


# -- filters ------------------------------------------------------------------------------

def test_topics_without_prefix_get_the_configured_one():
    prefix = "org.debian.dev"
    assert msgfilter.expand_topic("dak.package", prefix) == "org.debian.dev.dak.package"
    assert msgfilter.expand_topic("dak", prefix) == "org.debian.dev.dak"
    assert msgfilter.expand_topic("org.debian.stg.dak", prefix) == "org.debian.stg.dak"
    assert msgfilter.expand_topic("org.", prefix) == "org."
    assert msgfilter.expand_topic("", prefix) == ""


def test_names_from_repeated_and_comma_separated_options():
    assert msgfilter.split_names(["alice", "bob, carol", " ", "alice,"]) == {
        "alice", "bob", "carol"}


def _with_headers(body, names_from=None):
    message = UploadDone(names_from or body)
    return envelope(body, headers=headers(message, STAMP))


def test_filters_match_the_headers_first():
    env = _with_headers(UPLOAD)
    message = INDEX.for_envelope(env)
    assert msgfilter.NameFilter(users={"alice"}).matches(env, message)
    assert msgfilter.NameFilter(packages={"hebcal"}).matches(env, message)
    assert msgfilter.NameFilter(users={"bob", "alice"}, packages={"hebcal"}).matches(env, message)
    assert not msgfilter.NameFilter(users={"bob"}).matches(env, message)
    assert not msgfilter.NameFilter(users={"alice"}, packages={"dpkg"}).matches(env, message)
    assert not msgfilter.NameFilter()  # no filter: nothing to ask
    # The headers are what the publisher said: a reader without the type still filters.
    untyped = TypeIndex(()).for_envelope(env)
    assert type(untyped) is Message
    assert msgfilter.NameFilter(users={"alice"}).matches(env, untyped)
    # Headers that name other people than the body are believed (the publisher's word).
    env = _with_headers(UPLOAD, names_from={**UPLOAD, "user": "mallory"})
    assert not msgfilter.NameFilter(users={"alice"}).matches(env, INDEX.for_envelope(env))


def test_filters_ask_the_type_when_there_are_no_headers():
    env = envelope(UPLOAD)
    message = INDEX.for_envelope(env)
    assert msgfilter.NameFilter(users={"alice"}, packages={"hebcal"}).matches(env, message)
    assert not msgfilter.NameFilter(packages={"dpkg"}).matches(env, message)
    # A base message names nobody; a type failing on its body names nobody either.
    base = envelope({"user": "alice"}, topic="org.debian.dev.x.y.z")
    assert not msgfilter.NameFilter(users={"alice"}).matches(base, INDEX.for_envelope(base))
    broken = envelope({"package": "hebcal"})
    assert not msgfilter.NameFilter(users={"alice"}).matches(broken, INDEX.for_envelope(broken))


def test_full_headers_fall_back_to_the_type_for_the_names_left_out():
    many = [f"user{i}" for i in range(MAX_HEADER_NAMES + 10)]
    body = {**UPLOAD, "uploaders": many}
    env = _with_headers(body)
    assert sum(k.startswith("fedora_messaging_user_") for k in env["headers"]) == \
        MAX_HEADER_NAMES
    message = INDEX.for_envelope(env)
    assert msgfilter.NameFilter(users={many[-1]}).matches(env, message)  # past the cap
    assert not msgfilter.NameFilter(users={"nobody"}).matches(env, message)


class _Loud(UploadDone):
    """A type that neither clips its summary nor bounds its link."""

    name = "busgate.tailtest.upload.loud.v1"
    topic_tokens = ("tailtest", "upload", "loud")

    @property
    def summary(self) -> str:
        return "word\n" * 5000

    @property
    def url(self) -> str | None:
        return "https://tracker.example.org/" + "a" * self.body["length"]


def test_summary_and_link_are_bounded_whatever_the_type_returns():
    from gateway.messages import MAX_SUMMARY_CHARS

    index = TypeIndex([_Loud])
    topic = "org.debian.dev.tailtest.upload.loud"
    long_link = terse(envelope({**UPLOAD, "length": display.MAX_LINK_CHARS}, topic=topic),
                      index=index)
    assert "https://" not in long_link  # longer than MAX_LINK_CHARS: left out, not cut
    summary = long_link.rstrip("\n").split(" ", 2)[2]
    assert len(summary) == MAX_SUMMARY_CHARS and summary.endswith("…")
    assert "\n" not in summary
    fits = terse(envelope({**UPLOAD, "length": 100}, topic=topic), index=index)
    assert fits.endswith(" https://tracker.example.org/" + "a" * 100 + "\n")


def test_a_reader_types_what_its_publisher_could_not():
    """The publisher knew no type for the topic (its headers name the base type); the
    reader's type gives the summary, and the filters ask it rather than the empty headers."""
    env = envelope(UPLOAD, headers=headers(Message(UPLOAD), STAMP))
    assert env["headers"]["fedora_messaging_schema"] == "base.message"
    assert terse(env).split(" ", 1)[1] == (
        "tailtest.upload.done alice uploaded hebcal 4.31-1 "
        "https://tracker.example.org/pkg/hebcal\n")
    message = display.message_of(env, INDEX)
    assert type(message) is UploadDone
    assert msgfilter.NameFilter(users={"alice"}).matches(env, message)
    # A reader without the type believes the headers: nobody is named.
    base = display.message_of(env, TypeIndex(()))
    assert not msgfilter.NameFilter(users={"alice"}).matches(env, base)
