"""Riding out an outage of the result store: which errors mean "unreachable", retrying over a
window with backoff, and knowing which thread runs which task.

A worker keeps every task it has not finished recording. While the result store does not
answer (a restart, a failover, "the database system is starting up", a connection cut by the
server's shutdown), a state write is retried with growing pauses (kombu's
``retry_over_time``) until ``taskqueue_result_store_retry_window`` seconds have passed since
it was first tried; what happens when the window runs out is the backend's decision
(``backend.py``). Any other error (a bad value, a missing table) is not retried.

A write made by the thread that runs the task (between Celery's ``task_prerun`` and
``task_postrun``) may hold that task until it is written; a write made anywhere else in a
worker (its main process reporting a lost or timed-out task, a revoke, an expired message)
must never block the worker's event loop, so it goes to the writer thread (``deferred``).

The outage is logged once when it starts, every ``LOG_EVERY`` seconds while it lasts, and once
when the store answers again, instead of one traceback per failed write.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from kombu.utils.functional import retry_over_time
from sqlalchemy.exc import DBAPIError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: backoff between tries: the first retry after 50 ms, then 0.25 s longer each time, at most 2 s
INTERVAL_START, INTERVAL_STEP, INTERVAL_MAX = 0.05, 0.25, 2.0
LOG_EVERY = 30.0
#: what a SQLite file answers while another process holds it past the busy timeout
SQLITE_TRANSIENT = ("locked", "unable to open")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the result store cannot be reached now (worth retrying later)."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True  # the direct connection's errors: refused, dropped, starting up, shut down
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        original = exc.orig
        if isinstance(original, psycopg.OperationalError | psycopg.InterfaceError):
            return True  # a pooled connection could not be opened
        if isinstance(original, sqlite3.OperationalError):
            return any(text in str(original) for text in SQLITE_TRANSIENT)
    return False


def describe(exc: BaseException) -> str:
    """The first line of an error, for log lines and dead letters."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class OutageLog:
    """One warning when the store becomes unreachable, a reminder every ``LOG_EVERY`` s and
    one line when it answers again (per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._logged_at = 0.0

    def failed(self, exc: BaseException, what: str) -> None:
        now = time.monotonic()
        with self._lock:
            first = self.down_since is None
            if first:
                self.down_since = now
            elif now - self._logged_at < LOG_EVERY:
                return
            self._logged_at = now
            down_for = now - (self.down_since or now)
        if first:
            logger.warning("result store unreachable (%s); retrying, meanwhile keeping %s",
                           describe(exc), what)  # fmt: skip
        else:
            logger.warning("result store still unreachable after %.0f s (%s); retrying",
                           down_for, describe(exc))  # fmt: skip

    def answered(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            since, self.down_since = self.down_since, None
        if since is not None:
            logger.warning("result store reachable again after %.1f s", time.monotonic() - since)


outage_log = OutageLog()


def retry_until(operation: Callable[[], T], deadline: float | Callable[[], float], what: str) -> T:
    """Run ``operation``; while it fails because the store is unreachable, retry it with
    backoff until ``deadline`` (``time.monotonic()``, or a function giving it: a deadline can
    move closer while a write waits), then raise its last error."""
    until = deadline if callable(deadline) else lambda: deadline

    def errback(exc: BaseException, intervals: Any, retries: int) -> float:
        remaining = until() - time.monotonic()
        if not unreachable(exc) or remaining <= 0:
            raise exc
        outage_log.failed(exc, what)
        return max(min(next(intervals), remaining), 0.0)

    remaining = until() - time.monotonic()
    if remaining <= 0:
        result = operation()  # one last try (retry_over_time treats no timeout as "forever")
    else:
        result = retry_over_time(
            operation, Exception, errback=errback, timeout=remaining,
            interval_start=INTERVAL_START, interval_step=INTERVAL_STEP,
            interval_max=INTERVAL_MAX,
        )  # fmt: skip
    outage_log.answered()
    return result


# -- is it reachable now? --------------------------------------------------------------------

PROBE_EVERY = 2.0
_probed: dict[str, tuple[float, str | None]] = {}
_probe_lock = threading.Lock()


def probe(store: Callable[[], Any], key: str) -> str | None:
    """Why the result store cannot be reached now (None: it answers); ``store`` opens it.
    Asked at most every ``PROBE_EVERY`` seconds per ``key`` (a scrape or probe each)."""
    with _probe_lock:
        found = _probed.get(key)
        if found is not None and time.monotonic() - found[0] < PROBE_EVERY:
            return found[1]
        try:
            store().ping()
            problem = None
        except Exception as exc:
            problem = describe(exc)
        _probed[key] = (time.monotonic(), problem)
        return problem


# -- who runs what -----------------------------------------------------------------------------

_running = threading.local()
_in_worker = False


def on_task_prerun(task_id: str | None = None, **kwargs: Any) -> None:
    _running.task_id = task_id


def on_task_postrun(task_id: str | None = None, **kwargs: Any) -> None:
    if getattr(_running, "task_id", None) == task_id:
        _running.task_id = None


def running_here(task_id: str) -> bool:
    """Whether this thread is running ``task_id`` now (its write may hold it)."""
    return bool(task_id) and getattr(_running, "task_id", None) == task_id


def on_worker_start(**kwargs: Any) -> None:
    """A worker's main process (``worker_init``, ``worker_ready``) or one of its pool
    processes (``worker_process_init``)."""
    global _in_worker
    _in_worker = True


def in_worker() -> bool:
    """Whether this process is a Celery worker's (whose event loop must never wait): told by
    the worker's signals, or — for a worker that created its backend after they were sent —
    by the tracer optimisations every ``celery worker`` sets up before it starts (inherited
    by its pool processes)."""
    if _in_worker:
        return True
    trace = sys.modules.get("celery.app.trace")
    return bool(getattr(trace, "_localized", None))


def connect(signals: Any) -> None:
    signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="tq-outage-prerun")
    signals.task_postrun.connect(on_task_postrun, weak=False, dispatch_uid="tq-outage-postrun")
    # a worker creates its result backend after worker_init (for its banner), so its main
    # process learns it is a worker's from worker_ready, sent before it consumes
    for signal, uid in ((signals.worker_init, "tq-outage-worker"),
                        (signals.worker_ready, "tq-outage-ready"),
                        (signals.worker_process_init, "tq-outage-pool")):  # fmt: skip
        signal.connect(on_worker_start, weak=False, dispatch_uid=uid)
