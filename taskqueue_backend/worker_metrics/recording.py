"""What a worker records, where its tasks run (the pool processes under prefork, the main
process for solo and threads), and the main process's own gauges.

The metric objects are made on first use after ``enable`` (once the multiprocess directory is
in the environment), never at import. Task names become labels up to ``MAX_TASK_LABELS`` per
process; further names count as ``(other)``, so a flood of unknown names cannot grow the
series without bound.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from .. import headers as delivery
from .. import lifecycle

MAX_TASK_LABELS = 200
OTHER = "(other)"
#: Celery's states as this exporter's ``state`` label
STATES = {"SUCCESS": lifecycle.SUCCEEDED, "FAILURE": lifecycle.FAILED, "RETRY": lifecycle.RETRIED,
          "REVOKED": lifecycle.REVOKED, "REJECTED": lifecycle.REJECTED}  # fmt: skip
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
           float("inf"))  # fmt: skip

_enabled = False
_metrics: dict[str, Any] = {}
_started: dict[str, float] = {}  # task id -> when it started here (monotonic)
_names: set[str] = set()
_lock = threading.Lock()


def enable() -> None:
    """Record from now on (the worker asked for its exporter)."""
    global _enabled
    _enabled = True


def metrics() -> dict[str, Any]:
    with _lock:
        if not _metrics:
            from prometheus_client import Counter, Histogram

            _metrics["tasks"] = Counter(
                "taskqueue_worker_tasks", "Tasks this worker finished, by how they ended",
                ["task", "state"], registry=None,
            )  # fmt: skip
            _metrics["runtime"] = Histogram(
                "taskqueue_worker_task_runtime_seconds", "Started to finished, in this worker",
                ["task"], buckets=BUCKETS, registry=None,
            )  # fmt: skip
            _metrics["wait"] = Histogram(
                "taskqueue_worker_task_queue_wait_seconds",
                "Queued to started: from the publish, or from the replay of a dead letter "
                "(this package's broker stamps both)",
                ["task"], buckets=BUCKETS, registry=None,
            )  # fmt: skip
            _metrics["redeliveries"] = Counter(
                "taskqueue_worker_task_redeliveries",
                "Tasks this worker started on a second or later delivery of their message",
                ["task"], registry=None,
            )  # fmt: skip
        return _metrics


def task_label(name: Any) -> str:
    text = str(name or "(unknown)")
    with _lock:
        if text in _names:
            return text
        if len(_names) < MAX_TASK_LABELS:
            _names.add(text)
            return text
    return OTHER


# -- signal handlers ---------------------------------------------------------------------------


def on_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    if not _enabled or not task_id:
        return
    _started[task_id] = time.monotonic()
    request = getattr(task, "request", None)
    name = task_label(getattr(task, "name", None))
    queued = delivery.queued_at(request)  # a replay waits from the replay, not a day before
    if queued is not None:
        metrics()["wait"].labels(name).observe(max(time.time() - queued, 0.0))
    if delivery.delivery_count(request) > 1:
        metrics()["redeliveries"].labels(name).inc()


def on_postrun(task_id: str | None = None, task: Any = None, state: str | None = None,
               **kwargs: Any) -> None:  # fmt: skip
    if not _enabled or not task_id:
        return
    started = _started.pop(task_id, None)
    name = task_label(getattr(task, "name", None))
    if started is not None:
        metrics()["runtime"].labels(name).observe(time.monotonic() - started)
    ended = STATES.get(str(state))
    if ended is not None and ended != lifecycle.REVOKED:  # counted by task_revoked
        metrics()["tasks"].labels(name, ended).inc()


def on_revoked(request: Any = None, **kwargs: Any) -> None:
    if _enabled:
        name = getattr(request, "task_name", None) or getattr(request, "name", None)
        if not isinstance(name, str):  # a request Context (Celery's own revoke sends one)
            name = getattr(request, "task", None)
        metrics()["tasks"].labels(task_label(name), lifecycle.REVOKED).inc()


def on_rejected(message: Any = None, **kwargs: Any) -> None:
    if _enabled:
        found = getattr(message, "headers", None) or {}
        metrics()["tasks"].labels(task_label(found.get("task")), lifecycle.REJECTED).inc()


def on_unknown(name: Any = None, **kwargs: Any) -> None:
    if _enabled:
        metrics()["tasks"].labels(task_label(name), lifecycle.REJECTED).inc()


def connect(signals: Any) -> None:
    pairs = [(signals.task_prerun, on_prerun), (signals.task_postrun, on_postrun),
             (signals.task_revoked, on_revoked), (signals.task_rejected, on_rejected),
             (signals.task_unknown, on_unknown)]  # fmt: skip
    for signal, handler in pairs:
        signal.connect(handler, weak=False, dispatch_uid=f"tq-metrics-{handler.__name__}")


# -- the main process's gauges -----------------------------------------------------------------


class WorkerCollector:
    """Prefetched (received, not running yet) and running tasks of this worker, read from
    Celery's worker state in the main process at each scrape."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    def collect(self) -> Iterator[Any]:
        from celery.worker import state
        from prometheus_client.core import GaugeMetricFamily

        running = len(state.active_requests)
        prefetched = max(len(state.reserved_requests) - running, 0)
        for name, text, value in (
            ("taskqueue_worker_prefetched_tasks", "Tasks received and waiting to run", prefetched),
            ("taskqueue_worker_running_tasks", "Tasks running now", running),
        ):
            family = GaugeMetricFamily(name, text, labels=["worker"])
            family.add_metric([self.hostname], value)
            yield family
        from .server import result_store_problem

        if sys.modules.get("taskqueue_backend.backend.history") is not None:
            family = GaugeMetricFamily(
                "taskqueue_worker_result_store_up",
                "1 while this worker's result store answers, 0 while it does not",
                labels=["worker"],
            )
            family.add_metric([self.hostname], 0 if result_store_problem() else 1)
            yield family
