"""busgate: normalized, durable, signed events from legacy distribution services."""

__version__ = "0.1.0"

#: ``gateway.publish(...)`` and friends (gateway/api.py), imported on first use only:
#: ``busgate mail`` imports this package on every archive mail.
_API = ("publish", "publish_many", "Publisher", "MessageError", "UnmarkedSpoolError")


def __getattr__(name: str) -> object:
    if name in _API:
        from gateway import api

        return getattr(api, name)
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
