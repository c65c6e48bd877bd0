"""A stopping daemon ends: no task of it may keep the loop alive after a cancel, and a
spool worker that died must not turn the loop into a busy one. Real store, real ZeroMQ
socket, a real spool worker process; every wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import zmq.asyncio

from gateway import daemon, runtime
from gateway.publisher import Publisher
from gateway.spoolworker import SpoolWorker
from gateway.transports.zmq import ZmqPublisher
from gateway.wakeup import wait_set
from tests.conftest import adopt


def test_a_publisher_woken_in_the_turn_it_is_cancelled_ends(make_settings) -> None:
    """The hang of a daemon stopping while a dead worker's pipe woke the publisher on
    every loop turn: ``asyncio.wait_for`` (3.11) returned the wake-up, lost the cancel,
    and the publisher ran on."""
    store = runtime.open_store(make_settings())

    async def main() -> bool:
        context = zmq.asyncio.Context()
        transport = ZmqPublisher(context, "tcp://127.0.0.1:0")
        publisher = Publisher(store, transport)
        task = asyncio.create_task(publisher.run())
        try:
            await asyncio.sleep(0.1)  # idle: the outbox is empty, it waits to be woken
            assert not task.done()
            publisher.notify()  # "new rows", and the daemon stops, in one loop turn
            task.cancel()
            await asyncio.wait([task], timeout=3)
            return task.done() and task.cancelled()
        finally:
            for _ in range(50):  # a failed run must not leave the task behind
                if task.done():
                    break
                task.cancel()
                await asyncio.sleep(0.05)
            transport.close()
            context.destroy(0)

    assert asyncio.run(main()), "the publisher kept running after its cancel"
    store.close()


def test_wait_set_says_woken_or_timed_out_and_never_loses_a_cancel() -> None:
    async def main() -> None:
        event = asyncio.Event()
        started = time.monotonic()
        assert await wait_set(event, 0.05) is False
        assert time.monotonic() - started >= 0.05
        event.set()
        assert await wait_set(event, 5) is True
        event.clear()
        task = asyncio.create_task(wait_set(event, 5))
        await asyncio.sleep(0.01)
        event.set()
        task.cancel()  # in the same turn as the wake-up
        await asyncio.wait([task], timeout=3)
        assert task.cancelled()

    asyncio.run(main())


def test_end_tasks_cancels_again_and_gives_up_on_a_task_after_the_grace() -> None:
    async def swallows_one_cancel() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # what wait_for did: it goes on
            await asyncio.sleep(60)
        await asyncio.sleep(60)

    async def ignores_every_cancel(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    async def fails() -> None:
        raise RuntimeError("reported elsewhere")

    async def main() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(swallows_one_cancel(), name="swallows"),
                 asyncio.create_task(ignores_every_cancel(stop), name="ignores"),
                 asyncio.create_task(fails(), name="fails")]
        await asyncio.sleep(0.01)
        started = time.monotonic()
        stuck = await daemon._end_tasks(tasks, grace=0.5, every=0.05)
        took = time.monotonic() - started
        assert [task.get_name() for task in stuck] == ["ignores"]
        assert tasks[0].cancelled() and isinstance(tasks[2].exception(), RuntimeError)
        assert 0.5 <= took < 3, took
        stop.set()
        await asyncio.wait(stuck, timeout=3)

    asyncio.run(main())


def test_a_dead_spool_worker_does_not_spin_the_loop(make_settings) -> None:
    """Its end of the ``added`` pipe closes with it: that end of file must be read once,
    not on every loop turn until the supervisor notices (each turn woke the publisher)."""
    settings = make_settings()
    adopt(settings)
    wakes: list[float] = []

    async def main() -> None:
        worker = SpoolWorker(settings, lambda: wakes.append(time.monotonic()))
        worker.start()
        try:
            assert worker.process is not None and worker.process.pid is not None
            await asyncio.sleep(0.2)
            os.kill(worker.process.pid, signal.SIGKILL)
            await asyncio.to_thread(worker.process.join, 10)
            wakes.clear()
            await asyncio.sleep(0.5)  # the loop turns: is the dead pipe read on each?
        finally:
            worker.stop()

    asyncio.run(main())
    assert len(wakes) <= 1, f"{len(wakes)} wake-ups from a dead worker's pipe in 0.5 s"


def test_a_stop_sent_to_the_whole_group_ends_quietly(daemon) -> None:
    """systemd stops a service by SIGTERM to every process of it: the spool worker gets
    one from systemd and another from the daemon stopping it. The second must not
    interrupt the first one's cleanup (it landed in logging's exit hook, a traceback in
    the journal at every stop)."""
    proc, _ = daemon()
    children = _children(proc.proc.pid)
    assert children, "no spool worker process"
    for pid in [proc.proc.pid, *children]:  # as systemd's control-group kill, in a row
        os.kill(pid, signal.SIGTERM)
    assert proc.proc.wait(15) == 0
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    time.sleep(0.3)  # the worker's last words reach the log
    output = proc.output()
    assert "Traceback" not in output and "Exception ignored" not in output, output[-2000:]


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


WORKER_STOPPING = r'''
import atexit, os, signal, sys, time
from gateway import spoolworker
signal.signal(signal.SIGTERM, spoolworker._stop)
atexit.register(lambda: time.sleep(1.0))  # cleanup that takes a while (logging's, a store's)
print("ready", flush=True)
os.kill(os.getpid(), signal.SIGTERM)  # the first stop
time.sleep(5)
'''


def test_a_second_stop_does_not_interrupt_the_spool_worker_s_cleanup() -> None:
    """The worker's SIGTERM handler raises SystemExit once; a second SIGTERM (systemd's
    and the daemon's) arriving while it cleans up is ignored, not raised inside the
    cleanup (``Exception ignored in atexit callback``, seen on ``make run``'s stop)."""
    import subprocess
    import sys

    worker = subprocess.Popen([sys.executable, "-c", WORKER_STOPPING], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
    time.sleep(0.3)  # in its exit hooks now
    worker.send_signal(signal.SIGTERM)
    _, errors = worker.communicate(timeout=10)
    assert worker.returncode == 0
    assert "Traceback" not in errors and "Exception ignored" not in errors, errors
