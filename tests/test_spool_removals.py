"""The spool worker deletes ingested items on threads (issue 16): every item goes, a
name stays "in flight" (so the worker does not read it again) until its file is gone,
an item that cannot be deleted is reported once, and the queue is bounded."""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.spool import Spool
from gateway.spoolworker import Removals

WAIT = 10.0  # generous: the machine is loaded; every wait below ends on an event


def items(spool: Spool, count: int) -> list[Path]:
    spool.ensure()
    for n in range(count):
        spool.deliver("events", b'{"n": %d}\n' % n)
    return spool.pending()


def test_every_item_is_deleted_and_in_flight_until_its_file_is_gone(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    paths = items(spool, 40)
    gate = threading.Event()
    seen_in_flight: list[bool] = []

    def remove(path: Path) -> bool:
        assert gate.wait(WAIT)
        seen_in_flight.append(path.name in removals.in_flight() and path.exists())
        return Spool.remove(path)

    removals = Removals(threads=4, remove=remove)
    for path in paths:
        removals.submit(path)
    assert removals.in_flight() == {p.name for p in paths}
    gate.set()
    removals.wait()
    assert spool.pending() == [] and removals.in_flight() == set()
    assert seen_in_flight == [True] * 40 and removals.failed() == set()


def test_an_item_that_cannot_be_deleted_is_reported_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    (good,) = items(spool, 1)
    bad = spool.new / "0.1.x.events"
    bad.mkdir()  # unlink cannot delete a directory: Spool.remove says False
    removals = Removals(threads=2)
    removals.submit(good)
    removals.submit(bad)
    removals.wait()
    assert not good.exists() and bad.is_dir()
    assert removals.failed() == {bad.name}
    assert removals.failed() == set() and removals.in_flight() == set()


def test_submitting_waits_while_the_queue_is_full(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    paths = items(spool, 3)
    gate, third_queued = threading.Event(), threading.Event()

    def remove(path: Path) -> bool:
        assert gate.wait(WAIT)
        return Spool.remove(path)

    removals = Removals(threads=1, limit=2, remove=remove)
    removals.submit(paths[0])
    removals.submit(paths[1])

    def third() -> None:
        removals.submit(paths[2])
        third_queued.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not third_queued.wait(0.5)  # two queued, none done: the third must wait
    gate.set()
    assert third_queued.wait(WAIT)
    thread.join(WAIT)
    removals.wait()
    assert spool.pending() == []
