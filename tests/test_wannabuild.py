"""wanna-build translation, states, body schema and configuration (no database needed).

The database-backed tests (real PostgreSQL) are in test_wannabuild_pg.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest
from messages_helpers import check_events

from adapters.wannabuild import states
from adapters.wannabuild.messages import TYPES, BuildStateChange
from adapters.wannabuild.order import chain, in_written_order
from adapters.wannabuild.poller import Cursor, check, from_settings, parse_since
from adapters.wannabuild.query import describe
from adapters.wannabuild.settings import WannaBuildSettings
from adapters.wannabuild.translate import MAX_KEY_CHARS, Row, event_key, poison_key, to_event
from gateway import config
from gateway.errors import ConfigError
from gateway.event import Event
from gateway.messages import MessageValidationError
from tests.conftest import REPO

EXAMPLE = REPO / "conf" / "examples" / "wannabuild.toml"
T0 = dt.datetime(2024, 5, 1, 12, 0, 0, 123456)


def conforms(event: Event) -> None:
    """The event validates against its message type, which agrees with its users/packages."""
    check_events([event], TYPES)


def refused(body: object) -> None:
    with pytest.raises(MessageValidationError):
        BuildStateChange(body).validate()


def row(**changes: object) -> Row:
    base = Row(architecture="amd64", package="hello", distribution="sid", version="2.10-3",
               action="--take", prevstate="Needs-Build", state="Building",
               real_user="buildd_amd64-x86-01", set_user="buildd_amd64-x86-01", time=T0,
               epoch=T0.replace(tzinfo=dt.UTC).timestamp(), pkg_present=True,
               pkg_version="2.10-3", pkg_state="Building", builder="buildd_amd64-x86-01")
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(("state", "token"), [
    ("Needs-Build", "needs-build"), ("Building", "building"), ("Built", "built"),
    ("Build-Attempted", "build-attempted"), ("Uploaded", "uploaded"),
    ("Installed", "installed"), ("Dep-Wait", "dep-wait"),
    ("BD-Uninstallable", "bd-uninstallable"), ("Failed", "failed"),
    ("Not-For-Us", "not-for-us"), ("Auto-Not-For-Us", "auto-not-for-us"),
    ("Failed-Removed", "failed-removed"), ("Dep-Wait-Removed", "dep-wait-removed"),
    ("deleted", "deleted"),
])
def test_every_known_state_has_its_token(state: str, token: str) -> None:
    assert states.is_known(state)
    assert states.slug(state) == token
    event = to_event(row(state=state, pkg_state=state))
    assert event.topic("org.debian.dev") == f"org.debian.dev.wanna-build.build.{token}"
    conforms(event)


@pytest.mark.parametrize(("state", "token"), [
    (None, "unknown"), ("", "unknown"), ("---", "unknown"), ("!!", "unknown"),
    ("Install-Wait", "install-wait"), ("Reupload Wait", "reupload-wait"),
    ("Ünï.code/../x", "n-code-x"), ("a" * 200, "a" * states.MAX_SLUG),
    ("x" + "-" * 60 + "y", "x-y"), ("a" * 47 + "!b", "a" * 47),
])
def test_unknown_or_hostile_states_still_give_a_valid_token(state: str | None,
                                                            token: str) -> None:
    assert states.slug(state) == token
    event = to_event(row(state=state))
    assert event.event == token  # Event() validated the token grammar
    assert event.body["state"] == (state[:1000] if state else state)


def test_body_fields_and_metadata() -> None:
    event = to_event(row(action="--set-failed", prevstate="Building", state="Failed",
                         pkg_state="Failed", failed="E: build-depends not satisfiable",
                         notes="uncompiled", binary_nmu_version=2, set_user="wbadm",
                         real_user="aurel32"))
    assert event.service == "wanna-build" and event.object == "build"
    assert event.event == "failed"
    assert event.body == {
        "architecture": "amd64", "distribution": "sid", "package": "hello",
        "version": "2.10-3", "previous_state": "Building", "state": "Failed",
        "action": "--set-failed", "user": "wbadm", "real_user": "aurel32",
        "time": "2024-05-01T12:00:00.123456+00:00", "package_row": "current",
        "builder": "buildd_amd64-x86-01", "failed": "E: build-depends not satisfiable",
        "binary_nmu_version": 2, "notes": "uncompiled", "depends": None, "truncated": [],
        "link": "https://buildd.debian.org/status/package.php?p=hello&suite=sid",
    }
    assert event.usernames == ("wbadm", "aurel32")
    assert event.packages == ("hello",)
    assert event.time == pytest.approx(T0.replace(tzinfo=dt.UTC).timestamp())
    conforms(event)


def test_packages_row_fields_only_while_it_still_shows_this_change() -> None:
    later = to_event(row(pkg_state="Built", failed="old text", notes="x"))
    assert later.body["package_row"] == "changed"
    assert later.body["builder"] is later.body["failed"] is later.body["notes"] is None
    newer_version = to_event(row(pkg_version="2.10-4"))
    assert newer_version.body["package_row"] == "changed"
    gone = to_event(row(state="deleted", pkg_present=False, pkg_version=None, pkg_state=None,
                        builder=None))
    assert gone.body["package_row"] == "gone" and gone.event == "deleted"
    for event in (later, newer_version, gone):
        conforms(event)


def test_none_previous_state_and_nulls() -> None:
    event = to_event(Row(architecture=None, package=None, distribution=None, version=None,
                         action=None, prevstate="(none)", state="Needs-Build", real_user=None,
                         set_user=None, time=T0))
    assert event.body["previous_state"] is None
    assert event.body["time"] == T0.isoformat()  # no epoch: the stored time as it is
    assert event.usernames == () and event.packages == ()
    assert event.time is None
    conforms(event)


def test_failure_text_and_other_fields_are_bounded() -> None:
    event = to_event(row(pkg_state="Failed", state="Failed", failed="x" * 5000,
                         notes="n" * 1001, depends="d" * 1000, action="a" * 3000),
                     max_failure_chars=100)
    assert event.body["failed"] == "x" * 100
    assert event.body["notes"] == "n" * 1000 and event.body["depends"] == "d" * 1000
    assert event.body["action"] == "a" * 1000
    assert event.body["truncated"] == ["action", "failed", "notes"]
    conforms(event)
    too_long = dict(event.body, notes="n" * 1001)
    refused(too_long)


def test_sql_ascii_bytes_decode_with_escapes() -> None:
    event = to_event(row(package=b"caf\xe9", failed=b"\xff\xfe ok \xc3\xa9", version=b"1.0",
                         pkg_version=b"1.0", state=b"Building".decode()))
    assert event.body["package"] == "caf\\xe9"
    assert event.body["failed"] == "\\xff\\xfe ok é"
    assert event.packages == ("caf\\xe9",)
    conforms(event)


def test_key_is_stable_distinct_and_bounded() -> None:
    assert event_key(row()) == event_key(row())
    assert to_event(row()).key == event_key(row())
    differing = [row(time=T0 + dt.timedelta(microseconds=1)), row(action="--built"),
                 row(state="Built"), row(prevstate="Built"), row(set_user="x"),
                 row(real_user="y"), row(version="2"), row(architecture="i386"),
                 row(distribution="trixie"), row(package="hello2"),
                 row(prevstate=None), row(package='he","llo')]
    keys = {event_key(r) for r in differing} | {event_key(row())}
    assert len(keys) == len(differing) + 1
    # the values of two fields cannot be shifted into each other
    assert event_key(row(package="a:b", distribution="c")) != \
        event_key(row(package="a", distribution="b:c"))
    huge = event_key(row(action="z" * 100000))
    assert huge.startswith("wanna-build:sha256:") and len(huge) < MAX_KEY_CHARS
    assert huge != event_key(row(action="z" * 100001))


def test_event_body_never_validates_with_extra_or_wrong_fields() -> None:
    body = dict(to_event(row()).body)
    refused({**body, "extra": 1})
    refused({**body, "package_row": "maybe"})
    refused({**body, "binary_nmu_version": "1"})


def test_cursor_round_trip() -> None:
    cursor = Cursor(time=T0, low=T0 - dt.timedelta(hours=1), checked=T0, xmin=2**33 + 5,
                    open={"123/4/56": (T0 - dt.timedelta(hours=1)).isoformat()})
    assert Cursor.load(cursor.dump()) == cursor
    assert Cursor.load(None) is None
    # a cursor of the wall-clock overlap version: its window is read once more
    old = json.dumps({"time": T0.isoformat(), "now": (T0 + dt.timedelta(seconds=3)).isoformat()})
    loaded = Cursor.load(old, dt.timedelta(seconds=300))
    assert loaded is not None and loaded.xmin is None
    assert (loaded.time, loaded.low) == (T0, T0 + dt.timedelta(seconds=3 - 300))


def test_rows_of_one_run_follow_the_state_chain() -> None:
    """Issue 10 #2: rows sharing a timestamp go in prevstate -> state order, whatever
    their actions' alphabetical order or their place in the table."""
    needs = row(action="--merge-v3: needs-build", prevstate="(none)", state="Needs-Build",
                position="(0,2)")
    bd = row(action="--merge-v3: bd-uninstallable", prevstate="Needs-Build",
             state="BD-Uninstallable", position="(0,1)")
    take = row(package="other", action="--take", prevstate="Needs-Build", state="Building",
               position="(0,4)")
    built = row(package="other", action="--set-built", prevstate="Building", state="Built",
                position="(0,3)")
    ordered = in_written_order([bd, needs, built, take])
    assert [r.state for r in ordered] == ["Needs-Build", "BD-Uninstallable", "Building", "Built"]
    # a loop (Needs-Build -> Building -> Needs-Build): the table order decides the start
    give_back = row(action="--give-back", prevstate="Building", state="Needs-Build",
                    position="(0,6)")
    take2 = row(action="--take", prevstate="Needs-Build", state="Building", position="(0,5)")
    assert chain([give_back, take2]) == [take2, give_back]
    # no chain at all (hostile values): table order, nothing lost
    odd = [row(prevstate=None, state=None, position=f"(0,{i})") for i in (3, 1, 2)]
    assert [r.position for r in chain(odd)] == ["(0,1)", "(0,2)", "(0,3)"]
    assert len(chain([row(position="junk"), row(position=None)])) == 2


def test_poison_row_is_refused_with_its_reason() -> None:
    poison = row(time=None, epoch=None, time_text="infinity")
    with pytest.raises(ValueError, match="infinity is not a time"):
        to_event(poison)
    assert poison_key(poison) == poison_key(dataclasses.replace(poison, position="(9,9)"))
    assert poison_key(poison) != poison_key(row(time=None, time_text="-infinity"))


def test_parse_since() -> None:
    assert parse_since("2024-05-01") == dt.datetime(2024, 5, 1)
    assert parse_since("2024-05-01T12:00:00Z").tzinfo is not None
    assert parse_since(" 2024-05-01 12:00:00.5 ") == dt.datetime(2024, 5, 1, 12, 0, 0, 500000)
    with pytest.raises(ConfigError, match=r"--since.*ISO 8601"):
        parse_since("yesterday", key="--since")


def test_describe_never_shows_the_password() -> None:
    assert describe("host=db.example port=5433 dbname=wb user=u password=s3cret") == \
        "db.example:5433/wb"
    assert describe("service=wanna-build") == "service wanna-build"
    assert describe("postgresql://u:s3cret@h/wb") == "h:5432/wb"
    assert describe("nonsense = = =") == "(invalid dsn)"


@pytest.mark.parametrize(("changes", "key"), [
    ({"dsn": ""}, "wannabuild.dsn"),
    ({"dsn": "this is not = a dsn ="}, "wannabuild.dsn"),
    ({"since": "soon"}, "wannabuild.since"),
    ({"timezone": "Mars/Olympus"}, "wannabuild.timezone"),
    ({"overlap_seconds": 0.0}, "wannabuild.overlap_seconds"),
    ({"batch_rows": 0}, "wannabuild.batch_rows"),
])
def test_config_errors_name_the_key(changes: dict[str, object], key: str) -> None:
    cfg = dataclasses.replace(WannaBuildSettings(dsn="host=127.0.0.1 dbname=wb"), **changes)
    with pytest.raises(ConfigError) as info:
        check(cfg)
    assert info.value.key == key


def test_example_config_documents_every_key(tmp_path: Path) -> None:
    settings = config.load(EXAMPLE)
    assert settings.wannabuild.enabled and settings.wannabuild.dsn == "service=wanna-build"
    text = EXAMPLE.read_text()
    for field in dataclasses.fields(WannaBuildSettings):
        assert f"\n{field.name} = " in text, field.name
    # every documented value is the default, except enabled and dsn
    defaults = WannaBuildSettings()
    for field in dataclasses.fields(WannaBuildSettings):
        if field.name not in ("enabled", "dsn"):
            assert getattr(settings.wannabuild, field.name) == getattr(defaults, field.name)
    poller = from_settings(settings)
    assert poller.name == "wanna-build"
    assert poller.overlap == dt.timedelta(seconds=300)
