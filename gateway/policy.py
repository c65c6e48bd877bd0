"""The routing policy: which identities may sign which topics.

A TOML file with one table, ``[routing]``, mapping a topic prefix to the
identities allowed to sign topics under it: an X.509 certificate's CN or an
OpenPGP primary-key fingerprint (40 hex digits, case and spaces ignored)::

    [routing]
    "org.debian.prod.dak" = ["ftp-master.debian.org"]
    "org.debian.prod.git" = ["8E1C 2B1A ...", "salsa.debian.org"]

A prefix matches whole topic tokens (``org.debian.prod.dak`` covers
``org.debian.prod.dak.upload.accepted``, not ``org.debian.prod.dakota.x``);
the longest matching prefix decides. A topic no prefix covers is allowed to
any valid signer, unless ``routing_nitpicky`` (then it is refused), as in
fedmsg, whose policy keys are whole topics (a whole topic is a prefix too).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field

from gateway.errors import ConfigError

#: Largest routing policy file read, in bytes.
MAX_POLICY_BYTES = 1024 * 1024
#: Most prefixes, and most identities under one prefix, a policy may list.
MAX_POLICY_ENTRIES = 10000

_FPR = re.compile(r"^[0-9A-F]{40}$|^[0-9A-F]{64}$")


def normalise(identity: str) -> str:
    """An OpenPGP fingerprint in one spelling (upper case, no spaces); a CN unchanged."""
    compact = identity.replace(" ", "").upper()
    return compact if _FPR.match(compact) else identity


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: ``policy`` (the prefix lists others) or ``underspecified`` (nitpicky, no prefix).
    reason: str = ""
    prefix: str | None = None


@dataclass
class RoutingPolicy:
    rules: dict[str, frozenset[str]] = field(default_factory=dict)
    nitpicky: bool = False

    def decide(self, topic: str, identity: str) -> Decision:
        prefix = self.prefix_for(topic)
        if prefix is None:
            return Decision(not self.nitpicky, "" if not self.nitpicky else "underspecified")
        if normalise(identity) in self.rules[prefix]:
            return Decision(True, prefix=prefix)
        return Decision(False, "policy", prefix)

    def prefix_for(self, topic: str) -> str | None:
        """The longest prefix covering ``topic`` (whole tokens), if any."""
        candidate = topic
        while True:
            if candidate in self.rules:
                return candidate
            cut = candidate.rfind(".")
            if cut < 0:
                return None
            candidate = candidate[:cut]


def load(path: str, nitpicky: bool = False) -> RoutingPolicy:
    """Read a policy file; ``ConfigError`` (key ``signing.routing_policy``) says what is wrong."""
    key = "signing.routing_policy"
    if not path:
        return RoutingPolicy(nitpicky=nitpicky)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key=key) from None
    if len(raw) > MAX_POLICY_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_POLICY_BYTES} bytes", key=key)
    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", key=key) from None
    extra = set(data) - {"routing"}
    if extra:
        raise ConfigError(f"{path}: unknown table or key {sorted(extra)[0]!r} (only "
                          "[routing])", key=key)
    table = data.get("routing", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: routing must be a table", key=key)
    if len(table) > MAX_POLICY_ENTRIES:
        raise ConfigError(f"{path}: more than {MAX_POLICY_ENTRIES} prefixes", key=key)
    rules: dict[str, frozenset[str]] = {}
    for prefix, names in _flatten(table):
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{path}: {prefix!r} must be a list of identities (strings)",
                              key=key)
        if len(names) > MAX_POLICY_ENTRIES:
            raise ConfigError(f"{path}: {prefix!r} lists more than {MAX_POLICY_ENTRIES} "
                              "identities", key=key)
        rules[prefix.rstrip(".")] = frozenset(normalise(n) for n in names)
    return RoutingPolicy(rules, nitpicky)


def _flatten(table: dict[str, object], prefix: str = "") -> list[tuple[str, object]]:
    """Quoted keys stay whole; an unquoted dotted key (a TOML sub-table) is joined back."""
    out: list[tuple[str, object]] = []
    for name, value in table.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, dict):
            out += _flatten(value, f"{dotted}.")
        else:
            out.append((dotted, value))
    return out
