"""The envelope's ``headers`` (fedora-messaging's meaning) and the factory that builds it."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from gateway import envelope as env
from gateway import messages
from gateway.envelope import EnvelopeFactory
from gateway.event import Event
from gateway.store import Store
from tests.example_types import Accept, Remove
from tests.messages_helpers import index_of

NOW = 1700000000  # 2023-11-14T22:13:20+00:00


def accept(key: str = "dak:accept:hebcal_4.31-1:unstable", **over: Any) -> Event:
    body = {"source": "hebcal", "version": "4.31-1", "suite": "unstable",
            "maintainer": "Barak A. Pearlmutter <bap@debian.org>", "changed_by": "bap"}
    fields: dict[str, Any] = dict(service="dak", object="package", event="accept", key=key,
                                  body=body, time=1661558400.0)
    fields.update(over)
    return Event(**fields)


def stored(factory: EnvelopeFactory, event: Event, seq_id: int = 1) -> dict[str, Any]:
    topic, msg_id, text = factory.make(event, seq_id, NOW)
    envelope = json.loads(text)
    assert text == env.canonical_json(envelope)  # the stored text is the canonical form
    assert envelope["topic"] == topic and envelope["msg_id"] == msg_id
    return envelope


@pytest.mark.parametrize("head", [
    {"fedora_messaging_schema": "base.message", "fedora_messaging_severity": 20,
     "sent-at": "2023-11-14T22:13:20+00:00"},
    {"busgate_package_é\"x": True, "fedora_messaging_user_b\\a": True, "sent-at": "t",
     "fedora_messaging_schema": "s", "fedora_messaging_severity": 30},
    {},
])
def test_fast_encoding_with_headers_equals_the_canonical_form(head):
    fields = dict(topic="org.debian.dev.dak.package.accept", body={"b": [1, "é"]},
                  msg_id="2026-x", timestamp=NOW, i=3, username="dak", seq_id=9,
                  publisher="p", publisher_epoch="e0")
    assert env.encode_unsigned(**fields, headers_json=env.canonical_json(head)) \
        == env.canonical_json(env.build(**fields, headers=head))


def test_a_typed_event_gets_its_types_headers():
    factory = EnvelopeFactory("org.debian.dev", "ftp-master", "dak", index=index_of([Accept]))
    envelope = stored(factory, accept(usernames=("alice", "bap")))
    assert envelope["headers"] == {
        "fedora_messaging_schema": "busgate.test.package.accept.v1",
        "fedora_messaging_severity": messages.INFO,
        "sent-at": "2023-11-14T22:13:20+00:00",
        # the type's user first, the adapter's extra one kept, no duplicate
        "fedora_messaging_user_bap": True,
        "fedora_messaging_user_alice": True,
        "busgate_package_hebcal": True,
    }
    # the same meaning as messages.headers() on the received envelope
    message = index_of([Accept]).for_envelope(envelope)
    assert messages.headers(message, NOW, usernames=["bap", "alice"]) == envelope["headers"]


def test_an_untyped_event_is_a_base_message_with_the_events_own_names():
    factory = EnvelopeFactory("org.debian.dev", "p", "u")  # empty index: the registry's today
    envelope = stored(factory, Event(service="logger", object="message", event="log", key="k",
                                     body={"log": "hi"}, usernames=("carol",),
                                     packages=("dpkg",)))
    assert envelope["headers"] == {
        "fedora_messaging_schema": "base.message", "fedora_messaging_severity": 20,
        "sent-at": "2023-11-14T22:13:20+00:00", "fedora_messaging_user_carol": True,
        "busgate_package_dpkg": True}


def test_users_and_packages_in_headers_are_capped_but_the_body_keeps_them_all():
    factory = EnvelopeFactory("org.debian.dev", "p", "u", index=index_of([Remove]))
    names = [f"pkg{n}" for n in range(messages.MAX_HEADER_NAMES * 3)]
    event = Event(service="dak", object="package", event="remove", key="r",
                  body={"sources": names, "by": "ftpmaster"},
                  usernames=tuple(f"u{n}" for n in range(200)))
    envelope = stored(factory, event)
    head = envelope["headers"]
    packages = messages.names_in_headers(head, messages.PACKAGE_HEADER_PREFIX)
    users = messages.names_in_headers(head, messages.USER_HEADER_PREFIX)
    assert sorted(packages) == sorted(names[:messages.MAX_HEADER_NAMES])
    assert len(users) == messages.MAX_HEADER_NAMES and "ftpmaster" in users
    assert envelope["msg"]["sources"] == names
    assert head["fedora_messaging_severity"] == messages.WARNING


def test_a_name_too_long_for_a_header_key_is_left_out_not_cut():
    factory = EnvelopeFactory("org.debian.dev", "p", "u")
    long = "x" * (messages.MAX_HEADER_NAME_CHARS + 1)
    envelope = stored(factory, Event(service="a", object="b", event="c", key="k", body={},
                                     usernames=(long, "ok")))
    assert messages.names_in_headers(envelope["headers"], messages.USER_HEADER_PREFIX) == ["ok"]


def test_the_header_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(env, "HEADER_CACHE_SIZE", 5)
    factory = EnvelopeFactory("org.debian.dev", "p", "u")
    for n in range(20):
        envelope = stored(factory, Event(service="a", object="b", event="c", key=f"k{n}",
                                         body={}, usernames=(f"user{n}",)))
        assert envelope["headers"][f"fedora_messaging_user_user{n}"] is True
        assert len(factory._heads) <= 5


def test_the_signed_path_carries_the_same_headers():
    class TagSigner:  # no signing backend ships yet: this one only marks the envelope
        name = "tag"

        def sign(self, envelope: dict[str, Any]) -> dict[str, Any]:
            return {**envelope, "signature": "s", "certificate": "c"}

    plain = EnvelopeFactory("org.debian.dev", "p", "u", index=index_of([Accept]))
    signed = EnvelopeFactory("org.debian.dev", "p", "u", signer=TagSigner(),
                             index=index_of([Accept]))
    a, b = stored(plain, accept()), stored(signed, accept())
    assert {k: v for k, v in b.items() if k not in ("signature", "certificate")} == a


def test_msg_id_is_the_same_for_the_same_key_with_headers_and_across_stores(tmp_path):
    """Headers change the envelope, never the identity: the msg_id is the pinned uuid5 of
    the key (with the source event's year), whatever the type index or the store."""
    event = accept(key="dak:accept:hebcal_4.31-1_source.changes:unstable")
    ids = set()
    for n, index in enumerate((messages.TypeIndex(()), index_of([Accept]))):
        store = Store(tmp_path / f"{n}.sqlite",
                      EnvelopeFactory("org.debian.dev", "p", "u", index=index))
        with store.transaction() as tx:
            assert tx.add_events([event, event]) == [1]  # the same key twice: stored once
        with store.transaction() as tx:
            assert tx.add_events([event]) == []
        ids.add(json.loads(store.rows_after(0)[0].envelope)["msg_id"])
        store.close()
    assert ids == {"2022-fe0a4d12-6361-5dbb-8103-17018fd79ed2"}


def test_a_type_whose_severity_depends_on_the_body():
    class Build(messages.Message):
        name = "busgate.test.sev.v1"
        topic_tokens: ClassVar[tuple[str, ...]] = ("wb", "build", "*")

        @property  # type: ignore[override]
        def severity(self) -> int:  # type: ignore[override]
            return messages.WARNING if self.body.get("state") == "failed" else messages.INFO

    factory = EnvelopeFactory("org.debian.dev", "p", "u", index=index_of([Build]))
    for n, (state, severity) in enumerate((("failed", 30), ("built", 20), ("failed", 30))):
        envelope = stored(factory, Event(service="wb", object="build", event=state,
                                         key=f"b{n}", body={"state": state}))
        assert envelope["headers"]["fedora_messaging_severity"] == severity


def test_pattern_lookups_are_remembered_within_a_bound(monkeypatch):
    from tests.example_types import Build

    monkeypatch.setattr(messages, "MAX_MATCHED_TOPICS", 3)
    index = index_of([Build])
    for n in range(10):
        assert index.lookup(("wb", "build", f"s{n}")) is Build
        assert index.lookup(("wb", "other", f"s{n}")) is messages.Message
        assert len(index._matched) <= 3
