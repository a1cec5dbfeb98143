"""Who this process is, as the consumer registry shows it (set by the transport's Celery
hooks), and when its consumer last heartbeat: shared by the transport, which sets it, and the
worker's metrics server (``worker_metrics``), which reads it without importing the transport."""

from __future__ import annotations

import os
import time

#: set by the Celery hooks to the worker's node name, shown in the consumer registry
WORKER_NODENAME: str | None = None
#: set by the Celery hooks: the worker's pool size
WORKER_CONCURRENCY: int | None = None
#: the process that selected the transport (a worker's main process: pool processes are
#: forked from it after it set itself up)
_SELECTED_IN = os.getpid()
#: set in a prefork pool process: the pid of the worker's main process (its consumer's pid)
_MAIN_PID: int | None = None
#: when a consumer of this process last heartbeat (monotonic), and its window in seconds: the
#: worker's liveness (``worker_metrics``' ``/healthz``); None until the first beat
LAST_BEAT: float | None = None
HEARTBEAT_TIMEOUT: float | None = None


def heartbeat_succeeded(window: float) -> None:
    global LAST_BEAT, HEARTBEAT_TIMEOUT
    LAST_BEAT, HEARTBEAT_TIMEOUT = time.monotonic(), float(window)


#: whether this process selected the transport at all (a worker on another broker has no
#: consumer heartbeat to judge its liveness by)
SELECTED = False


def selected_here() -> None:
    """Called when the transport is selected in this process (``hooks.install``)."""
    global _SELECTED_IN, SELECTED
    _SELECTED_IN, SELECTED = os.getpid(), True


def entered_pool_process() -> None:
    """Called as a pool starts (``worker_process_init``; the solo pool sends it too, in the
    worker's own process)."""
    global _MAIN_PID
    if os.getpid() != _SELECTED_IN:
        _MAIN_PID = _SELECTED_IN


def main_pid() -> int:
    """The pid of the worker process that consumes (this one, unless in a prefork pool)."""
    return _MAIN_PID if _MAIN_PID is not None else os.getpid()


def worker_stats() -> dict[str, str]:
    """Concurrency, active and processed tasks of the Celery worker in this process."""
    stats = {}
    if WORKER_CONCURRENCY:
        stats["concurrency"] = str(WORKER_CONCURRENCY)
    try:
        from celery.worker import state
    except ImportError:  # kombu without Celery
        return stats
    stats["active"] = str(len(state.active_requests))
    stats["processed"] = str(sum(state.total_count.values()))
    return stats
