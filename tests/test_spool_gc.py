"""The spool worker ingests with the cycle collector off (issue 16): none of its walks
over a bulk item's live events, and the collector's state is as it was afterwards."""

from __future__ import annotations

import gc
import json

import pytest

from gateway import ingest, runtime
from gateway.event import Event
from gateway.spoolworker import no_collection


def test_no_collection_runs_while_a_bulk_item_is_ingested(make_settings) -> None:
    settings = make_settings()
    store = runtime.open_store(settings)
    raw = b"".join(json.dumps(Event("logger", "message", "log", key=f"gc:{n}",
                                    body={"n": n, "names": ["a", "b"]}).to_dict()).encode()
                   + b"\n" for n in range(3000))
    runs: list[str] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            runs.append(phase)

    threshold = gc.get_threshold()
    gc.callbacks.append(seen)
    gc.set_threshold(100, 10, 10)
    try:
        with no_collection():
            runs.clear()  # any run before this line is not the worker's
            assert ingest.ingest(store, settings, "events", raw).added == 3000
            during = len(runs)
        assert gc.isenabled()
        ingest.ingest(store, settings, "events", raw)  # the same again: all duplicates
        after = len(runs)
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*threshold)
    assert during == 0
    assert after > 0  # the collector would have run: the first check can fail


def test_the_collector_is_restored_even_after_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(ValueError), no_collection():
        assert not gc.isenabled()
        raise ValueError
    assert gc.isenabled()
    gc.disable()
    try:
        with no_collection():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()
