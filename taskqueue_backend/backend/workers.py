"""The workers table: each worker keeps its own row current while it runs.

A thread in the worker's main process upserts hostname, pid, queues, concurrency, active
tasks, processed tasks (Celery's own count) and failed ones (from the history) and the last
heartbeat every ``taskqueue_worker_heartbeat`` seconds (default 5). No per-task write touches
the row, so pool processes never wait on each other for it. At shutdown the row turns
``offline``. The control plane reads the table and calls a worker stale when its last
heartbeat is older than its window.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime
from typing import Any

from celery import signals

logger = logging.getLogger(__name__)

_thread: WorkerBeat | None = None


class WorkerBeat(threading.Thread):
    def __init__(self, backend: Any, consumer: Any, interval: float) -> None:
        super().__init__(name="tq-worker-row", daemon=True)
        self.backend = backend
        self.consumer = consumer
        self.interval = interval
        self.first_seen = datetime.now(UTC)
        self._stop_event = threading.Event()

    def row(self, state: str) -> dict[str, Any]:
        from celery.worker import state as worker_state

        consumer = self.consumer
        queues = []
        task_consumer = getattr(consumer, "task_consumer", None)
        if task_consumer is not None:
            queues = sorted(q.name for q in task_consumer.queues)
        pool = getattr(consumer, "pool", None)
        return {
            "hostname": consumer.hostname,
            "pid": os.getpid(),
            "state": state,
            "queues": queues,
            "concurrency": getattr(pool, "num_processes", None) or getattr(pool, "limit", None),
            "active": len(worker_state.active_requests),
            "processed": sum(worker_state.total_count.values()),
            "failed": self.backend.store.count_events(consumer.hostname, "failed", self.first_seen),
            "first_seen": self.first_seen,
            "last_heartbeat": datetime.now(UTC),
        }

    def beat(self, state: str = "online") -> None:
        try:
            self.backend.store.upsert_worker(self.row(state))
        except Exception as exc:
            logger.warning("could not update the workers table (will retry): %s", exc)

    def run(self) -> None:
        while True:
            self.beat()
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.beat("offline")


def on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    global _thread
    from . import history

    backend = history.current_backend()
    if backend is None or sender is None:
        return
    interval = float(backend.app.conf.get("taskqueue_worker_heartbeat") or 5.0)
    _thread = WorkerBeat(backend, sender, interval)
    _thread.start()


def on_worker_shutdown(**kwargs: Any) -> None:
    if _thread is not None and _thread.is_alive():
        _thread.stop()


def install() -> None:
    signals.worker_ready.connect(on_worker_ready, weak=False, dispatch_uid="tq-worker-row")
    signals.worker_shutdown.connect(on_worker_shutdown, weak=False,
                                    dispatch_uid="tq-worker-row-off")  # fmt: skip
