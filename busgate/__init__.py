"""``import busgate; busgate.publish(topic=..., modname=..., msg=...)``: the Python API
(:mod:`gateway.api`) under the project's name, as ``fedmsg.publish`` is under fedmsg's."""

from gateway.api import MessageError, Publisher, UnmarkedSpoolError, publish, publish_many
from gateway.errors import BusgateError, SpoolError, TopicError

__all__ = ["BusgateError", "MessageError", "Publisher", "SpoolError", "TopicError",
           "UnmarkedSpoolError", "publish", "publish_many"]
