"""The git source: pushes, seen by a post-receive hook (``busgate git-hook``) that
hands their events to the daemon's spool -> ``<git.service>.*`` (``git`` by default)."""

from __future__ import annotations

from adapters.scm.settings import GitSettings
from gateway.errors import ConfigError, TopicError
from gateway.sources import CommandSpec, Source

#: Bounds that must be positive for a push to be described at all.
_POSITIVE = ("max_commits", "max_push_commits", "max_event_bytes", "max_new_commits",
             "max_refs", "max_item_events")


def validate(section: GitSettings, settings: object) -> None:
    from gateway import topics

    try:
        topics.check_token(section.service, "service")
    except TopicError as exc:
        raise ConfigError(str(exc), key="git.service") from None
    for key in _POSITIVE:
        value = getattr(section, key)
        if value <= 0:
            raise ConfigError(f"must be greater than 0, not {value}", key=f"git.{key}")


def topic_overrides(section: GitSettings) -> dict[type, tuple[str, ...]]:
    """The git types' first topic token is this deployment's ``git.service``."""
    from adapters.scm.messages import topic_overrides as overrides

    return overrides(section)


SOURCE = Source(
    name="git",
    section="git",
    settings=GitSettings,
    validate=validate,
    commands=(CommandSpec(name="git-hook", module="adapters.scm.hook"),),
    messages="adapters.scm.messages:TYPES",
    topic_overrides=topic_overrides,
    description="git pushes, from a post-receive hook",
)
