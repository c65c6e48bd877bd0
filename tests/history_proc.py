"""The recorder as its own process (for kill -9 tests), slowed by DELAY_S per message so
a kill lands mid-stream.

    python -m tests.history_proc CONFIG DATABASE [DELAY_S]
"""

from __future__ import annotations

import sys
import time

from gateway import config
from gateway.history.recorder import Recorder
from gateway.history.store import SqliteHistory


def main() -> None:
    settings = config.load(sys.argv[1])
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    store = SqliteHistory(sys.argv[2])
    recorder = Recorder(settings, store)
    handle = recorder.handle

    def slow(delivery) -> None:  # type: ignore[no-untyped-def]
        handle(delivery)
        time.sleep(delay)

    recorder.handle = slow  # type: ignore[method-assign]
    print("ready", flush=True)
    recorder.run()


if __name__ == "__main__":
    main()
