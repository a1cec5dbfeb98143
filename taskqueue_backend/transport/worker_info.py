"""Who this process is, as the consumer registry shows it (set by the Celery hooks)."""

from __future__ import annotations

import os

#: set by the Celery hooks to the worker's node name, shown in the consumer registry
WORKER_NODENAME: str | None = None
#: set by the Celery hooks: the worker's pool size
WORKER_CONCURRENCY: int | None = None
#: the process that selected the transport (a worker's main process: pool processes are
#: forked from it after it set itself up)
_SELECTED_IN = os.getpid()
#: set in a prefork pool process: the pid of the worker's main process (its consumer's pid)
_MAIN_PID: int | None = None


def selected_here() -> None:
    """Called when the transport is selected in this process (``hooks.install``)."""
    global _SELECTED_IN
    _SELECTED_IN = os.getpid()


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
