"""Commit a consumer's batches in a thread of their own, while the next batch is read.

Why: the recorder's batch commit is mostly SQLite and FTS5 in C, which releases the
GIL around each step; reading, decoding and building the next batch's records is
Python. One thread doing both leaves the second core idle; two stages overlap.

What holds: a job is one whole batch (its writes *and* its position moves) run by
:func:`commit_batch` in one transaction, so a kill -9 at any time leaves each batch
either committed with its position or not at all (replay brings it back). Jobs run in
the order they were handed in. After a failed job nothing more is committed (a later
batch's position would jump over the failed one's messages): the rest is dropped and
the error is raised to the reader at its next :meth:`CommitPipe.submit`,
:meth:`CommitPipe.check` or :meth:`CommitPipe.drain`. At most ``depth`` batches wait
(the queue's bound: memory is ``depth`` batches plus the one being written).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Most batches a pipe may hold waiting (``history.pipeline_batches`` is checked against it).
MAX_DEPTH = 16

#: A job: run inside the batch's transaction on the connection it is given.
Job = Callable[[sqlite3.Connection], object]


class CommitPipe:
    """One writer thread running jobs on ``db``, each in a transaction of its own."""

    def __init__(self, db: sqlite3.Connection, depth: int, name: str = "commit"):
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"pipeline depth must be in 1..{MAX_DEPTH}, not {depth}")
        self.db = db
        self.depth = depth
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"{name}-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job`` (waits while ``depth`` are waiting); raises a failed job's error."""
        self.check()
        while True:
            try:
                self._jobs.put(job, timeout=0.1)
                return
            except queue.Full:  # the writer may have failed meanwhile: do not wait forever
                self.check()

    def check(self) -> None:
        """Raise the error of a job that failed (once; the pipe is empty after it)."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def drain(self) -> None:
        """Wait until every job handed in has run; raise a failed job's error."""
        self._jobs.join()
        self.check()

    def close(self) -> None:
        """Run what is queued, stop the thread; a failure is logged, not raised."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        if self._error is not None:
            log.warning("%s: a batch failed while closing: %s", self._thread.name, self._error)
            self._error = None

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:  # after a failure: dropped, never committed
                    self._run(job)
            finally:
                self._jobs.task_done()

    def _run(self, job: Job) -> None:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            job(db)
            db.execute("COMMIT")
        except BaseException as exc:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error:  # the connection itself failed: the error below says so
                pass
            self._error = exc


def commit_batch(write: Job, moves: dict[str, tuple[str | None, int]],
                 advance: Callable[[str, str | None, int], Any]) -> Job:
    """The job of one batch: its writes, then its position moves, in one transaction."""

    def job(db: sqlite3.Connection) -> None:
        write(db)
        for publisher, (epoch, seq_id) in moves.items():
            advance(publisher, epoch, seq_id)

    return job
