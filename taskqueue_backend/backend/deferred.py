"""State writes that the pool process hands to a thread instead of waiting for them.

A task acknowledged when it starts (Celery's default, ``acks_late=False``) is at-most-once:
its message is gone before it runs. Waiting for the database after it returns buys it
nothing but makes the worker slower, so its state writes go to one writer thread per process,
which runs them in order while the pool process goes on to the next task. Readers still see a
result only once it is committed (``get()`` wakes on the commit's NOTIFY).

Late-acknowledged tasks (``acks_late=True``) keep the synchronous write: their result is
committed before their message is acknowledged. A chord member's write is waited for before
the chord counter moves (``drain``), and the queue is drained when the pool process exits.
A connection error is retried until the database answers (the queue is bounded, so a long
outage slows the pool process down instead of growing memory); any other error is logged
with the task id, as Celery logs a failed synchronous write.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from .queries import connection_lost

logger = logging.getLogger(__name__)

#: writes waiting at most (then the submitting pool process waits for room)
MAX_QUEUED = 1000
RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)

Write = Callable[[], None]


class DeferredWriter(threading.Thread):
    """Runs submitted writes in order, one at a time, in a daemon thread."""

    def __init__(self) -> None:
        super().__init__(name="tq-state-writer", daemon=True)
        self.pid = os.getpid()
        self._queue: queue.Queue[tuple[str, Write] | None] = queue.Queue(MAX_QUEUED)
        self._stopped = False
        self._start_lock = threading.Lock()

    def submit(self, task_id: str, write: Write) -> None:
        if not self.is_alive():
            with self._start_lock:  # a thread pool may submit from several threads
                if not self.is_alive() and self.ident is None:
                    self.start()
        self._queue.put((task_id, write))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted write has run; False if ``timeout`` passed first."""
        if not self.is_alive():
            return True
        done = threading.Event()
        self._queue.put(("", done.set))
        return done.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self.is_alive() and not self._stopped:
            self._stopped = True
            if not self.drain(timeout):
                logger.error("state writes still queued at exit after %.0f s", timeout)
            self._queue.put(None)

    def run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            task_id, write = item
            self._run(task_id, write)

    def _run(self, task_id: str, write: Write) -> None:
        attempt = 0
        while True:
            try:
                write()
                return
            except Exception as exc:
                if not connection_lost(exc):
                    logger.exception("could not store the state of task %s", task_id)
                    return
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                logger.warning(
                    "database unavailable storing task %s (%s); retry %d in %.1f s",
                    task_id, exc, attempt, delay,
                )  # fmt: skip
                time.sleep(delay)


_writer: DeferredWriter | None = None
_lock = threading.Lock()


def writer() -> DeferredWriter:
    """This process's writer (a forked child makes its own)."""
    global _writer
    with _lock:
        if _writer is None or _writer.pid != os.getpid():
            _writer = DeferredWriter()
        return _writer


def drain() -> None:
    if _writer is not None and _writer.pid == os.getpid():
        _writer.drain()


def stop() -> None:
    if _writer is not None and _writer.pid == os.getpid():
        _writer.stop()
