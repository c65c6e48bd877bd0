"""The recorder on a durable RabbitMQ queue (``busgate record --amqp QUEUE``)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from amqp_helpers import amqp_settings, bind_queue, drain, mixed_batch, publish_outbox
from conftest import BUSGATE, REPO

from gateway import runtime
from gateway.history import query
from gateway.history.store import SqliteHistory

pytestmark = pytest.mark.rabbitmq


def test_record_from_an_amqp_queue(make_settings, vhost, queues, test_types, tmp_path):
    settings = amqp_settings(make_settings, vhost)
    queue = f"history-{uuid.uuid4().hex[:6]}"
    queues.append(queue)
    bind_queue(vhost, queue)
    store = runtime.open_store(settings)
    with store.transaction() as tx:
        tx.add_events(mixed_batch())
    publish_outbox(settings, store)
    db = tmp_path / "h.sqlite"
    done = subprocess.run([*BUSGATE, "--config", settings.loaded_from[0], "record", "--amqp",
                           queue, "--database", str(db), "--count", "13", "--timeout", "20"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "13 stored, 0 already there" in done.stderr
    want = [json.loads(r.envelope)["msg_id"] for r in store.rows_after(0, 100)]
    history = SqliteHistory(db)
    assert history.msg_ids() == want
    page = history.search(query.parse([("category", "amqptest"), ("rows_per_page", "100")]))
    assert page.total == 12 and any(row.packages for row in page.rows)  # typed: names kept
    history.close()
    assert drain(vhost, queue, expect=0, timeout=1) == []  # every one acked
