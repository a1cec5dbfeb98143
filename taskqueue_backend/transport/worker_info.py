"""Who this process is, as the consumer registry shows it (set by the Celery hooks)."""

from __future__ import annotations

#: set by the Celery hooks to the worker's node name, shown in the consumer registry
WORKER_NODENAME: str | None = None
#: set by the Celery hooks: the worker's pool size
WORKER_CONCURRENCY: int | None = None


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
