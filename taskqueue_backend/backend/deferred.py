"""State writes that a worker hands to a thread instead of waiting for them.

A task acknowledged when it starts (Celery's default, ``acks_late=False``) is at-most-once:
its message is gone before it runs. Waiting for the database after it returns buys it
nothing but makes the worker slower, so its outcome goes to one writer thread per process,
which runs the writes in order while the pool process goes on to the next task. The writes a
worker's main process makes (a lost or timed-out task, a revoked or expired one) go here too,
so the worker's event loop never waits for the database. Readers still see a result only once
it is committed (``get()`` wakes on the commit's NOTIFY).

While the result store is unreachable each write is retried with backoff (``outage``) until
its own deadline (the retry window from when it was submitted); then its ``give_up`` keeps the
outcome elsewhere (``state_writes``: the broker's dead letters). The queue is bounded, so a
long outage slows the pool process down instead of growing memory. When the process exits the
queue is drained for at most ``STOP_WAIT`` seconds; writes still waiting then are given up at
once rather than lost. Any other error is logged with the task id, as Celery logs a failed
synchronous write. A chord member's write is waited for before the chord counter moves
(``drain``).

State writes found queued together (up to ``MAX_TOGETHER``: writes that piled up while the
store was slow or unreachable, or a burst of short tasks) are committed in one transaction and
one round trip; nothing waits to be batched. When such a batch fails, every write in it is
retried on its own as above, its history rows marked as possibly written.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import outage

logger = logging.getLogger(__name__)

#: writes waiting at most (then the submitting pool process waits for room)
MAX_QUEUED = 1000
#: how long an exiting process waits for its queued writes before giving them up
STOP_WAIT = 30.0

#: state writes queued together that are committed in one transaction, at most
MAX_TOGETHER = 100

Write = Callable[[], None]
GiveUp = Callable[[BaseException], None]


@dataclass
class Together:
    """What a state write writes, so that writes queued together commit together: the
    backend (only writes of the same one are combined), the result row and history rows."""

    backend: Any
    row: dict[str, Any] | None
    events: list[dict[str, Any]]


@dataclass
class Job:
    task_id: str
    write: Write
    deadline: float  # time.monotonic() after which an unreachable store means give up
    give_up: GiveUp | None = None
    together: Together | None = None


class DeferredWriter(threading.Thread):
    """Runs submitted writes in order, one at a time, in a daemon thread."""

    def __init__(self) -> None:
        super().__init__(name="tq-state-writer", daemon=True)
        self.pid = os.getpid()
        self._queue: queue.Queue[Job | None] = queue.Queue(MAX_QUEUED)
        self._stopped = False
        self._cap: float | None = None  # set when the process exits: no deadline beyond it
        self._start_lock = threading.Lock()

    def submit(
        self, task_id: str, write: Write, deadline: float | None = None,
        give_up: GiveUp | None = None, together: Together | None = None,
    ) -> None:  # fmt: skip
        if not self.is_alive():
            with self._start_lock:  # a thread pool may submit from several threads
                if not self.is_alive() and self.ident is None:
                    self.start()
        when = time.monotonic() if deadline is None else deadline
        self._queue.put(Job(task_id, write, when, give_up, together))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted write has run; False if ``timeout`` passed first."""
        if not self.is_alive():
            return True
        done = threading.Event()
        self._queue.put(Job("", done.set, time.monotonic()))
        return done.wait(timeout)

    def stop(self, timeout: float = STOP_WAIT) -> None:
        if self.is_alive() and not self._stopped:
            self._stopped = True
            self._cap = time.monotonic() + timeout
            if not self.drain(timeout + 10):
                logger.error("state writes still queued at exit after %.0f s", timeout + 10)
            self._queue.put(None)

    def run(self) -> None:
        held: Job | None | object = _NOTHING  # taken from the queue, not part of the batch
        while True:
            job = self._queue.get() if held is _NOTHING else held
            held = _NOTHING
            if job is None:
                return
            assert isinstance(job, Job)
            if job.together is None:
                self._run(job)
                continue
            batch = [job]
            while len(batch) < MAX_TOGETHER:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if (
                    more is None
                    or more.together is None
                    or (more.together.backend is not job.together.backend)
                ):
                    held = more
                    break
                batch.append(more)
            self._run_together(batch)

    def _run_together(self, batch: list[Job]) -> None:
        """Writes queued together, committed in one transaction; when that fails, each is
        written on its own, with its retries and its deadline."""
        if len(batch) > 1:
            first = batch[0].together
            assert first is not None
            writes = [(job.together.row, job.together.events) for job in batch if job.together]
            try:
                first.backend.store.write_together(writes)
                return
            except Exception:
                logger.debug("%d state writes together failed; writing each alone", len(batch),
                             exc_info=True)  # fmt: skip
        for job in batch:
            self._run(job)

    def _deadline(self, job: Job) -> float:
        return job.deadline if self._cap is None else min(job.deadline, self._cap)

    def _run(self, job: Job) -> None:
        if not job.task_id:  # a drain marker
            job.write()
            return
        try:
            what = f"the state of task {job.task_id}"
            outage.retry_until(job.write, lambda: self._deadline(job), what)
        except Exception as exc:
            if not outage.unreachable(exc) or job.give_up is None:
                logger.exception("could not store the state of task %s", job.task_id)
                return
            try:
                job.give_up(exc)
            except Exception:
                logger.exception("could not keep the unrecorded state of task %s", job.task_id)


_NOTHING = object()
_writer: DeferredWriter | None = None
_lock = threading.Lock()


def writer() -> DeferredWriter:
    """This process's writer (a forked child makes its own)."""
    global _writer
    with _lock:
        if _writer is None or _writer.pid != os.getpid():
            _writer = DeferredWriter()
        return _writer


def on_writer_thread() -> bool:
    """Whether the caller is this process's writer thread (its writes run in place)."""
    return _writer is not None and threading.current_thread() is _writer


def drain() -> None:
    if _writer is not None and _writer.pid == os.getpid() and not on_writer_thread():
        _writer.drain()


def stop() -> None:
    if _writer is not None and _writer.pid == os.getpid():
        _writer.stop()
