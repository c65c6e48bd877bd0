"""A durable consumer as its own process (for kill -9 tests): every message it handles
becomes a row of ``seen`` in its position file, in the position's transaction.

    python -m tests.consumer_proc CONFIG STATE_DIR NAME [DELAY_S [BATCH]]
"""

from __future__ import annotations

import sys
import time

from gateway import config
from gateway.consumer import Consumer, Delivery


def main() -> None:
    settings = config.load(sys.argv[1])
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    with Consumer(settings, name=sys.argv[3], state_dir=sys.argv[2], batch=batch,
                  batch_seconds=0.1) as consumer:
        assert consumer.position is not None
        consumer.position.db.execute(
            "CREATE TABLE IF NOT EXISTS seen (msg_id TEXT NOT NULL, seq_id INTEGER)")
        print("ready", flush=True)

        def record(delivery: Delivery) -> None:
            assert delivery.db is not None
            delivery.db.execute("INSERT INTO seen VALUES (?, ?)",
                                (delivery.envelope["msg_id"], delivery.seq_id))
            if delay:
                time.sleep(delay)

        consumer.run(record)


if __name__ == "__main__":
    main()
