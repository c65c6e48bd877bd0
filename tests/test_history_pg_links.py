"""010 on the real server: the user and package links' keys are checked where a link can
lose its target (a message or name deleted, an id changed), not on every link inserted."""

from __future__ import annotations

import psycopg
import pytest

from gateway.history.pgstore import PostgresHistory
from tests import history_fixture as fx
from tests.test_history_pg import _pg_rollups_match
from tests.test_history_pg_ingest import _records

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


def test_link_keys_are_checked_where_a_link_can_lose_its_target(pg_databases):
    url = pg_databases()
    store = PostgresHistory(url)
    try:
        store.add_many(_records(range(1, 4)))
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(
                "SELECT COUNT(*) FROM pg_constraint WHERE contype = 'f' AND conrelid IN"
                " ('user_messages'::regclass, 'package_messages'::regclass)").fetchone() == (0,)
            (first,) = conn.execute("SELECT MIN(id) FROM messages").fetchone()
            for statement in (f"DELETE FROM messages WHERE id = {first}",
                              "DELETE FROM packages",
                              "UPDATE user_messages SET message_id = -1",
                              "UPDATE package_messages SET package_id = -1"):
                with pytest.raises(psycopg.errors.ForeignKeyViolation):
                    conn.execute(statement)
            conn.execute(  # the links and their message together: allowed, as before
                "WITH u AS (DELETE FROM user_messages WHERE message_id = %(id)s),"
                " p AS (DELETE FROM package_messages WHERE message_id = %(id)s)"
                " DELETE FROM messages WHERE id = %(id)s", {"id": first})
        assert store.msg_ids() == [fx.msg_id(2), fx.msg_id(3)]
        _pg_rollups_match(url)
    finally:
        store.close()
