"""The recorder as its own process (for kill -9 tests), slowed by DELAY_S per message so
a kill lands mid-stream; with KILL_AFTER, it kills itself (SIGKILL) right after storing
its KILL_AFTER-th message (PostgreSQL: right after committing the batch that holds it),
before the consumer commits the position past it.

    python -m tests.history_proc CONFIG DATABASE [DELAY_S [KILL_AFTER]]

DATABASE is a path (SQLite) or a postgresql:// URL.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from gateway import config
from gateway.history.backends import open_history_url
from gateway.history.recorder import Recorder


def main() -> None:
    settings = config.load(sys.argv[1])
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    kill_after = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    store = open_history_url(sys.argv[2], settings.history.query_timeout)
    recorder = Recorder(settings, store)
    handle = recorder.handle

    def slow(delivery) -> None:  # type: ignore[no-untyped-def]
        handle(delivery)
        if kill_after and recorder.stored + recorder.known >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(delay)

    flush = recorder.flush

    def flush_then_die(*db) -> None:  # type: ignore[no-untyped-def]
        flush(*db)  # PostgreSQL: the batch committed, the position not yet
        if kill_after and recorder.stored + recorder.known >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    recorder.handle = slow  # type: ignore[method-assign]
    recorder.flush = flush_then_die  # type: ignore[method-assign]
    print("ready", flush=True)
    recorder.run()


if __name__ == "__main__":
    main()
