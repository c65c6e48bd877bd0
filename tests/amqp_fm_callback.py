"""A stock fedora-messaging consumer's callback (CLI ``--callback`` and ``api.consume``):
writes what fedora-messaging made of each message as a JSON line, halts after N."""

from __future__ import annotations

import json
import os
import sys

from fedora_messaging.exceptions import HaltConsumer

_seen = 0


def record(message) -> None:  # type: ignore[no-untyped-def]
    global _seen
    line = {"topic": message.topic, "id": message.id, "body": message.body,
            "class": type(message).__name__, "module": type(message).__module__,
            "summary": message.summary, "url": message.url,
            "usernames": message.usernames, "packages": message.packages,
            "severity": message.severity, "headers": dict(message._headers)}
    with open(os.environ["BUSGATE_TEST_OUT"], "a") as out:
        out.write(json.dumps(line, sort_keys=True, default=str) + "\n")
    _seen += 1
    if _seen >= int(os.environ["BUSGATE_TEST_N"]):
        raise HaltConsumer(exit_code=0, requeue=False)


if __name__ == "__main__":  # api.consume on the queue named in argv[1]
    from fedora_messaging import api

    queue = sys.argv[1]
    try:
        api.consume(record, bindings=[], queues={queue: {
            "durable": True, "auto_delete": False, "exclusive": False, "arguments": {}}})
    except HaltConsumer as halt:
        sys.exit(halt.exit_code)
