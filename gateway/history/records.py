"""What the history stores of one envelope: its service, users, packages and text.

Users and packages are the envelope's filter headers (what its publisher's message
type said) merged with what the reader's own types say of the body (a publisher
without types, a fedmsg message without headers), at most
:data:`~gateway.messages.MAX_HEADER_NAMES` each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway import canonical, messages
from gateway.messages import TypeIndex

#: Category of a topic too short to have a service token (datanommer's word).
UNCLASSIFIED = "Unclassified"
#: Longest name kept as a user or package (longer ones are left out, not cut).
MAX_NAME_CHARS = messages.MAX_HEADER_NAME_CHARS

_USER, _PACKAGE = messages.USER_HEADER_PREFIX, messages.PACKAGE_HEADER_PREFIX
_USER_LEN, _PACKAGE_LEN = len(_USER), len(_PACKAGE)


@dataclass(frozen=True)
class Record:
    msg_id: str
    topic: str
    category: str
    timestamp: float
    publisher: str | None
    seq_id: int | None
    users: tuple[str, ...]
    packages: tuple[str, ...]
    #: The body's values (strings, numbers), one a line, non-ASCII kept: what
    #: ``contains`` searches (see :func:`text_of`).
    text: str
    #: The envelope as canonical JSON: what ``/raw`` and ``/id`` give back.
    envelope: str


def category(topic: str) -> str:
    """The service token: ``org.debian.dev.dak.upload`` -> ``dak`` (datanommer's token 3;
    token 2 for ActiveMQ's ``VirtualTopic`` names)."""
    tokens = topic.split(".")
    index = 2 if "VirtualTopic" in tokens else 3
    return tokens[index] if len(tokens) > index and tokens[index] else UNCLASSIFIED


def record_of(envelope: Mapping[str, Any], index: TypeIndex, *,
              float_free: bool = False) -> Record:
    """The :class:`Record` of a checked envelope (``gateway.envelope.check``).

    ``float_free``: the envelope was parsed holding no float (``jsonbounds.loads_flagged``
    said so), so its canonical JSON is orjson's, escaped, without a walk looking for
    floats (the stdlib encoder was half of this function's cost). Why not keep the
    received bytes instead: proving them canonical (no duplicate key, no blank, sorted)
    costs the same encoding to compare with.

    An envelope whose publisher typed it (a schema header naming a type, not the base
    one) is taken at its headers' word for users and packages: the publisher ran that
    type to write them, and asking the reader's type again costs a third of the
    recorder's time for the same names. Others (no schema, a fedmsg message) are
    typed by the reader."""
    head = envelope.get("headers")
    users: list[Any] = []
    packages: list[Any] = []
    schema = None
    if isinstance(head, Mapping):
        for key in head:  # one pass for both kinds
            if type(key) is not str:
                continue
            if key.startswith(_USER):
                users.append(key[_USER_LEN:])
            elif key.startswith(_PACKAGE):
                packages.append(key[_PACKAGE_LEN:])
        schema = head.get(messages.SCHEMA_HEADER)
    if not (type(schema) is str and schema and schema != messages.BASE_NAME):
        from gateway import display

        message = display.message_of(envelope, index)
        try:  # another publisher's body may break the reader's type: keep the headers'
            users += list(message.usernames)
            packages += list(message.packages)
        except Exception:  # noqa: S110 - a type's failure on a foreign body is not ours
            pass
    topic = str(envelope["topic"])
    seq = envelope.get("seq_id")
    publisher = envelope.get("publisher")
    return Record(
        msg_id=str(envelope["msg_id"]), topic=topic, category=category(topic),
        timestamp=float(envelope["timestamp"]),
        publisher=publisher if isinstance(publisher, str) else None,
        seq_id=seq if type(seq) is int else None,
        users=_names(users), packages=_names(packages),
        text=text_of(envelope.get("msg")),
        envelope=_canonical(envelope if type(envelope) is dict else dict(envelope),
                            float_free))


def _canonical(envelope: dict[str, Any], float_free: bool) -> str:
    """``canonical_json(envelope)``, byte for byte (tests/test_canonical.py holds
    ``canonical.dumps`` equal to it)."""
    return canonical.dumps_float_free(envelope) if float_free else canonical.dumps(envelope)


def text_of(body: Any) -> str:
    """The text ``contains`` searches: every string and number of the body, one a line.

    Why not the body's JSON (datagrepper's LIKE on it): its keys, quotes and escapes
    double the text without adding anything a reader looks for, and the trigram index
    costs per character (half the text: about twice the ingest rate, half the index).
    A value's own text is kept whole (``100% done_ok``, ``Jörg``, a commit id)."""
    out: list[str] = []
    stack = [body]
    while stack:  # exact types: a JSON body has no subclasses; bool is not a number here
        value = stack.pop()
        kind = type(value)
        if kind is str:
            out.append(value)
        elif kind is dict:
            stack.extend(reversed(value.values()))
        elif kind is list:
            stack.extend(reversed(value))
        elif kind is int or kind is float:
            out.append(str(value))
    return "\n".join(out)


def _names(names: list[Any]) -> tuple[str, ...]:
    """At most MAX_HEADER_NAMES distinct names of at most MAX_NAME_CHARS, in order."""
    kept: dict[str, None] = {}
    for name in names:
        if len(kept) >= messages.MAX_HEADER_NAMES:
            break
        if isinstance(name, str) and name and len(name) <= MAX_NAME_CHARS:
            kept[name] = None
    return tuple(kept)
