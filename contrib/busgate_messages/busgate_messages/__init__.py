"""busgate's message types as fedora-messaging ``Message`` subclasses.

Each entry point ``<type name> = busgate_messages:<attribute>`` resolves through
this module's ``__getattr__``: the attribute names one busgate type (its name with
every non-identifier character as ``_``), found in busgate's source registry, and
the wrapper class is made once and cached, so fedora-messaging's name <-> class maps
stay consistent. Everything a wrapper says (summary, url, usernames, packages,
severity, body schema) is busgate's type's own, computed from the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fedora_messaging import message as fm

MODULE = __name__
_cache: dict[str, type[fm.Message]] = {}


def attribute(type_name: str) -> str:
    """The module attribute of a type name (``busgate.dak.x.v1`` -> ``busgate_dak_x_v1``)."""
    return re.sub(r"\W", "_", type_name)


def busgate_types() -> list[type]:
    """Every message type busgate's registered sources declare."""
    from gateway.sources import type_index

    return type_index(None).types()


def entry_points(types: Iterable[type] | None = None) -> dict[str, str]:
    """``{type name: "busgate_messages:<attribute>"}``; refuses two names sharing an attribute."""
    result: dict[str, str] = {}
    seen: dict[str, str] = {}
    for cls in busgate_types() if types is None else types:
        attr = attribute(cls.name)
        if attr in seen and seen[attr] != cls.name:
            raise ValueError(f"{cls.name!r} and {seen[attr]!r} map to one attribute {attr!r}")
        seen[attr] = cls.name
        result[cls.name] = f"{MODULE}:{attr}"
    return dict(sorted(result.items()))


def wrap(cls: Any) -> type[fm.Message]:
    """A fedora-messaging class delegating to busgate type ``cls``."""
    cached = _cache.get(cls.name)
    if cached is not None:
        return cached

    def busgate(self: fm.Message) -> Any:
        return cls(self.body, topic=self.topic, headers=getattr(self, "_headers", None))

    namespace = {
        "__module__": MODULE,
        "__doc__": f"busgate message type {cls.name}: {(cls.__doc__ or '').strip()}",
        "busgate_type": cls,
        "body_schema": dict(cls.body_schema),
        "severity": cls.severity,
        "summary": property(lambda self: busgate(self).summary),
        "url": property(lambda self: busgate(self).url),
        "usernames": property(lambda self: list(busgate(self).usernames)),
        "packages": property(lambda self: list(busgate(self).packages)),
        "app_name": property(lambda self: "busgate"),
        "__str__": lambda self: f"{busgate(self).summary}\n{self.body}",
    }
    wrapper = type(attribute(cls.name), (fm.Message,), namespace)
    _cache[cls.name] = wrapper
    return wrapper


def __getattr__(name: str) -> type[fm.Message]:
    for cls in busgate_types():
        if attribute(cls.name) == name:
            return wrap(cls)
    raise AttributeError(f"no busgate message type is published as {MODULE}.{name}")
