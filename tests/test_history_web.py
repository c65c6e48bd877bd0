"""``busgate web``: /raw parameters against datagrepper's documented semantics on a
fixture history (table-driven), and each of datagrepper's known faults, fixed — on
both backends (``history_store``: SQLite, and PostgreSQL on the real server)."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from gateway.history.records import record_of
from gateway.history.store import QueryTimeout, SqliteHistory
from gateway.messages import TypeIndex
from tests import history_fixture as fx

H = fx.HOUR
T0 = fx.T0
TOPIC = fx.PREFIX + ".dak.upload.accepted"


@pytest.fixture(scope="module")
def web(history_store):
    store = fx.fill(history_store())
    with fx.serve(store) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def ids(answer: dict) -> list[int]:
    return [int(m["msg_id"][-12:]) for m in answer["raw_messages"]]


# (query string, expected message numbers in answer order) — datagrepper's semantics:
# newest first; OR within a kind, AND across kinds; not_* excludes any of its values;
# topic is an exact match; contains is a substring of the body.
TABLE = [
    ("", [6, 5, 4, 3, 2, 1]),
    ("order=asc", [1, 2, 3, 4, 5, 6]),
    (f"topic={TOPIC}", [3, 1]),
    (f"topic={fx.PREFIX}.dak", []),
    ("category=debbugs", [6, 2]),
    ("category=debbugs&category=git", [6, 5, 2]),
    ("category=dak&user=jorg", [3]),
    ("user=guillem", [6, 5, 1]),
    ("user=guillem&user=jorg", [6, 5, 3, 2, 1]),
    ("package=dpkg", [6, 4, 1]),
    ("package=hebcal&user=guillem", []),
    ("not_user=guillem", [4, 3, 2]),
    ("not_package=dpkg&not_package=hebcal", [5]),
    ("not_category=dak", [6, 5, 4, 2]),
    (f"not_topic={fx.PREFIX}.git.push", [6, 4, 3, 2, 1]),
    ("category=debbugs&not_package=hebcal", [6]),
    ("contains=dpkg", [6, 5, 4, 1]),
    ("contains=armhf&contains=crash", [4, 2]),
    ("contains=100%25", [5]),  # % is a character, not a wildcard
    ("contains=done_ok", [5]),
    ("contains=CLOSES", [6]),  # case-insensitive
    (f"start={T0 + 2 * H}", [6, 5, 4, 3]),
    (f"start={T0 + H}&end={T0 + 3 * H}", [4, 3, 2]),
    (f"start={T0 + H}&delta={H}", [3, 2]),
    (f"end={T0 + 4 * H}&delta={2 * H}", [5, 4, 3]),
    ("start=2026-12-01T02:00:00%2B00:00&end=2026-12-01T03:00:00", [4, 3]),
    ("delta=31536000", [6, 5, 4, 3, 2, 1]),
    ("delta=1", []),
    ("rows_per_page=2", [6, 5]),
    ("rows_per_page=2&page=3", [2, 1]),
    ("rows_per_page=2&page=4", []),
    ("rows_per_page=4&order=asc&page=2", [5, 6]),
]


@pytest.mark.parametrize(("params", "want"), TABLE, ids=[t[0] or "(none)" for t in TABLE])
def test_raw_parameters_follow_datagrepper_semantics(web, params, want):
    response = web.get(f"/raw?{params}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert ids(body) == want
    assert body["count"] == len(want)
    per_page = int(dict(p.split("=") for p in params.split("&") if p).get("rows_per_page", 25))
    total = body["total"]
    assert body["pages"] == -(-total // per_page)
    if "page" not in params:
        assert total == len(want)


def test_answer_shapes_and_arguments(web):
    raw = web.get(f"/raw?topic={TOPIC}&rows_per_page=1&order=asc&meta=summary"
                  "&meta=usernames&meta=packages&meta=date").json()
    assert set(raw) == {"raw_messages", "total", "total_capped", "pages", "count", "arguments",
                        "cursor"}
    assert raw["total_capped"] is False
    assert (raw["total"], raw["pages"], raw["count"]) == (2, 2, 1)
    assert raw["arguments"]["topics"] == [TOPIC] and raw["arguments"]["order"] == "asc"
    assert raw["arguments"]["rows_per_page"] == 1 and raw["arguments"]["meta"] == [
        "summary", "usernames", "packages", "date"]
    message = raw["raw_messages"][0]
    assert message["msg_id"] == fx.msg_id(1) and message["timestamp"] == T0
    assert message["msg"] == {"source": "dpkg", "maintainer": "guillem"}
    assert message["users"] == ["guillem"] and message["packages"] == ["dpkg"]
    assert {"i", "topic", "certificate", "signature", "crypto", "agent_name", "username",
            "headers", "source_name", "source_version"} <= set(message)
    assert message["meta"]["usernames"] == ["guillem"]
    assert message["meta"]["date"] == "2026-12-01T00:00:00+00:00"
    assert message["meta"]["summary"]
    v2 = web.get(f"/v2/search?topic={TOPIC}").json()["raw_messages"][0]
    assert set(v2) == {"body", "headers", "id", "priority", "queue", "topic"}
    assert v2["id"] == fx.msg_id(3) and v2["headers"]["sent-at"].startswith("2026-12-01T02")
    one = web.get("/id", params={"id": fx.msg_id(2), "is_raw": "true", "size": "extra-large"})
    assert one.json()["msg"]["title"] == "déjà vu crash"
    assert web.get("/v2/id", params={"id": fx.msg_id(2)}).json()["body"]["package"] == "hebcal"
    missing = web.get("/id", params={"id": "nope"})
    assert (missing.status_code, missing.json()) == (404, {"error": "not_found"})
    assert web.get("/messagecount").json() == {"messagecount": 6}
    assert web.get("/healthz").json() == {"status": "ok", "messages": 6,
                                          "index_behind": 0}
    assert web.get("/healthz/live").status_code == 200


BAD = [
    ("rows_per_page=0", "rows_per_page"),  # datagrepper: every row
    ("rows_per_page=101", "rows_per_page"),
    ("page=0", "page"),
    ("page=two", "page"),
    ("page=101", "page"),  # the hard page cap
    ("order=newest", "order"),
    ("meta=bogus", "meta"),  # datagrepper: 500
    ("size=huge", "size"),  # datagrepper: 500 on /id
    ("chrome=maybe", "chrome"),
    ("callback=alert(1)", "callback"),
    ("start=yesterday", "start"),
    ("end=nan", "end"),
    ("delta=-5", "delta"),
    (f"start={T0 + H}&end={T0}", "start"),
    ("grouped=true", "grouped"),  # unknown parameters are not silently ignored
    ("page=1&page=2", "page"),
    ("contains=ab", "contains"),
    ("user=", "user"),
    ("cursor=garbage", "cursor"),
    ("not_contains=x", "not_contains"),
    ("topic=" + "x" * 300, "topic"),
    ("&".join(f"user=u{i}" for i in range(51)), "user"),  # history.max_values
]


@pytest.mark.parametrize(("params", "parameter"), BAD, ids=[b[0][:40] for b in BAD])
def test_every_bad_parameter_is_a_400_with_the_reason(web, params, parameter):
    response = web.get(f"/raw?{params}")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "bad_request" and body["parameter"] == parameter
    assert body["detail"]


@pytest.mark.parametrize("params", ["", "id=x&size=huge", "id=x&is_raw=perhaps", "id=x&foo=1"])
def test_id_refuses_bad_parameters_with_400(web, params):
    response = web.get(f"/id?{params}")
    assert response.status_code == 400 and response.json()["error"] == "bad_request"


def test_end_alone_bounds_the_search(web):
    assert ids(web.get(f"/raw?end={T0 + H}").json()) == [2, 1]
    assert ids(web.get("/raw?end=2026-12-01T00:30:00").json()) == [1]


def test_contains_finds_non_ascii(web):
    assert ids(web.get("/raw", params={"contains": "Jörg"}).json()) == [3]
    assert ids(web.get("/raw", params={"contains": "déjà"}).json()) == [2]
    assert ids(web.get("/raw", params={"contains": "jöRG"}).json()) == [3]


@pytest.mark.parametrize("accept", [None, "text/html", "text/plain", "*/*",
                                    "application/xml"])
def test_json_is_always_labelled_json(web, accept):
    headers = {"Accept": accept} if accept else {}
    for path in ("/raw", f"/id?id={fx.msg_id(1)}", "/messagecount", "/raw?page=0", "/nowhere"):
        response = web.get(path, headers=headers)
        assert response.headers["content-type"] == "application/json", path
        response.json()
    jsonp = web.get("/raw?callback=cb.done&rows_per_page=1")
    assert jsonp.headers["content-type"] == "application/javascript"
    assert jsonp.text.startswith("/**/cb.done({") and jsonp.text.endswith("});")


def test_cursor_pages_stably_while_messages_arrive(history_store):
    store = fx.fill(history_store())
    with fx.serve(store) as url, httpx.Client(base_url=url, timeout=10) as client:
        seen: list[int] = []
        answer = client.get("/raw?rows_per_page=2").json()
        extra = 100
        while True:
            seen += ids(answer)
            # a newer message arrives between two pages: offset paging would shift
            newer = fx.envelope(extra, 10 + extra, "git.push", [], [], {"n": extra})
            store.add_many([record_of(newer, TypeIndex(()))])
            extra += 1
            if not answer["cursor"]:
                break
            answer = client.get("/raw", params={"rows_per_page": 2,
                                                "cursor": answer["cursor"]}).json()
        assert seen == [6, 5, 4, 3, 2, 1]
        wrong = client.get("/raw", params={"order": "asc", "cursor": answer["cursor"] or
                                           client.get("/raw?rows_per_page=1").json()["cursor"]})
        assert wrong.status_code == 400 and wrong.json()["parameter"] == "cursor"
    store.close()


ENDLESS = {"sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
                     " SELECT COUNT(*) FROM c",
           "postgresql": "SELECT pg_sleep(60)"}


def test_a_query_past_its_time_limit_is_cut_off(history_store):
    # short enough to cut the endless query soon, long enough that the count after it
    # meets it on a loaded machine
    store = history_store(query_timeout=0.25)
    endless = ENDLESS[history_store.backend]
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match=r"ran past history\.query_timeout"):
        store._timed(lambda db: db.execute(endless).fetchone())
    assert time.monotonic() - started < 3
    assert store.count() == 0  # the connection is still usable
    store.close()


def test_migrations_refuse_a_newer_database(tmp_path):
    from gateway.history.store import HistoryError

    path = tmp_path / "h.sqlite"
    SqliteHistory(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO history_migrations VALUES (99, '099_future.sql', 0)")
    with pytest.raises(HistoryError, match="newer than this busgate"):
        SqliteHistory(path)


@pytest.mark.parametrize(("table", "key"), [
    ({"port": 0}, "history.port"),
    ({"max_page": 0}, "history.max_page"),
    ({"max_values": 0}, "history.max_values"),
    ({"query_timeout": 0}, "history.query_timeout"),
    ({"pool_size": 0}, "history.pool_size"),
    ({"endpoints": ["http://nowhere"]}, "history.endpoints"),
    ({"batch_messages": 0}, "history.batch_messages"),
    ({"batch_messages": 100_001}, "history.batch_messages"),
    ({"batch_ms": 0}, "history.batch_ms"),
    ({"batch_ms": 5001}, "history.batch_ms"),
    ({"cache_mb": 0}, "history.cache_mb"),
    ({"count_limit": 0}, "history.count_limit"),
    ({"count_budget_ms": -1}, "history.count_budget_ms"),
    ({"write_parts": 0}, "history.write_parts"),
    ({"write_parts": 17}, "history.write_parts"),
    ({"write_parts": 5, "pool_size": 4}, "history.write_parts"),  # a part: a connection
])
def test_history_settings_are_checked(make_settings, table, key):
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        make_settings(history=table)
    assert caught.value.key == key


def test_max_page_is_a_setting(history_store):
    store = fx.fill(history_store())
    with fx.serve(store, max_page=2) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/raw?rows_per_page=1&page=2").status_code == 200
        refused = client.get("/raw?rows_per_page=1&page=3")
        assert refused.status_code == 400 and "cursor" in refused.json()["detail"]
    store.close()


class _Clock:
    """``store.time`` whose monotonic clock moves 10 ms at each look: a SQLite count's
    budget runs out after a known amount of work, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        self.now += 0.010
        return self.now


def test_raw_on_sqlite_says_a_count_past_its_budget_is_capped_and_pages_reach_every_row(
        tmp_path, monkeypatch):
    """A SQLite count cut by history.count_budget_ms: ``total`` a lower bound with
    ``total_capped``, ``pages`` one past each page that has a next, so clients paging by
    ``page`` or ``cursor`` get every row; within the budget the total is exact."""
    from gateway.history import store as store_module

    path = tmp_path / "h.sqlite"
    store = SqliteHistory(path)
    store.add_many(record_of(fx.envelope(n, n / 60, "git.push" if n % 2 else "bug.new",
                                         ["alice"], [], {"n": n}), TypeIndex(()))
                   for n in range(1, 2001))
    store.close()
    want = list(range(1999, 0, -2))  # alice's git.push, newest first
    asked = {"user": "alice", "topic": f"{fx.PREFIX}.git.push", "rows_per_page": 100}
    monkeypatch.setattr(store_module, "time", _Clock())
    budget, exact = SqliteHistory(path, count_budget_ms=5), SqliteHistory(path,
                                                                        count_budget_ms=0)
    with fx.serve(budget) as url, httpx.Client(base_url=url, timeout=30) as client:
        first = client.get("/raw", params=asked).json()
        assert (first["total"], first["total_capped"], first["pages"]) == (101, True, 2)
        assert ids(first) == want[:100] and first["cursor"]
        by_page, page, capped = [], 1, 0
        while True:
            got = client.get("/raw", params={**asked, "page": page}).json()
            by_page += ids(got)
            capped += got["total_capped"]
            if page >= got["pages"]:
                break
            page += 1
        assert by_page == want and capped
        assert (got["total"], got["total_capped"]) == (len(want), False)  # the last page
        by_cursor, params = [], dict(asked)
        while True:
            got = client.get("/raw", params=params).json()
            by_cursor += ids(got)
            if not got["cursor"]:
                break
            params["cursor"] = got["cursor"]
        assert by_cursor == want
    with fx.serve(exact) as url, httpx.Client(base_url=url, timeout=30) as client:
        whole = client.get("/raw", params=asked).json()
        assert (whole["total"], whole["total_capped"], whole["pages"]) == (len(want), False,
                                                                           10)
    budget.close()
    exact.close()
