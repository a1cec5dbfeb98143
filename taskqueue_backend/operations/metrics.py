"""Prometheus metrics of the broker: queues, dead letters (with retention trims) and workers.

``BrokerCollector`` reads the broker at scrape time through the same operations as every other
view (``Operations.queues``, ``Operations.workers``), so a forgotten worker disappears from the
metrics as it does from every view. Register it with any ``prometheus_client`` registry::

    registry = CollectorRegistry()
    registry.register(Operations.from_app(app).collector())

Everything here is cheap to read: counts come from sorted-set cardinalities and one small
script per queue, never from scanning messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
)
from prometheus_client.registry import Collector

from ..vocabulary import WorkerState

if TYPE_CHECKING:
    from .api import Operations


class BrokerCollector(Collector):
    """Collects the broker's state under one key prefix on every scrape."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    def collect(self) -> Iterator[Any]:
        yield from self._queues()
        yield from self._workers()

    def _queues(self) -> Iterator[Any]:
        messages = GaugeMetricFamily(
            "taskqueue_queue_messages", "Messages in a queue by state", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "taskqueue_queue_oldest_ready_age_seconds",
            "Age of the oldest ready message",
            labels=["queue"],
        )
        trimmed = CounterMetricFamily(
            "taskqueue_dead_letters_trimmed",
            "Dead letters removed by the retention (dead_letter_max_count/max_age)",
            labels=["queue"],
        )
        ready = GaugeMetricFamily(
            "taskqueue_queue_ready_messages", "Ready messages by priority",
            labels=["queue", "priority"],
        )  # fmt: skip
        dead = GaugeMetricFamily(
            "taskqueue_dead_letters", "Dead letters by queue and reason", labels=["queue", "reason"]
        )
        paused = GaugeMetricFamily(
            "taskqueue_queue_paused", "1 while the queue is paused", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "taskqueue_queue_consumers", "Live consumers of the queue", labels=["queue"]
        )
        all_stats = self.ops.queues.all()
        trimmed_counts = self.ops.broker.admin.dead_trimmed([s.queue for s in all_stats])
        for stats, trims in zip(all_stats, trimmed_counts, strict=True):
            q = stats.queue
            for state, count in (("ready", stats.ready), ("delayed", stats.delayed),
                                 ("inflight", stats.inflight), ("dead", stats.dead)):  # fmt: skip
                messages.add_metric([q, state], count)
            if stats.oldest_ready_age is not None:
                oldest.add_metric([q], stats.oldest_ready_age)
            trimmed.add_metric([q], trims)
            for priority, count in stats.ready_by_priority.items():
                ready.add_metric([q, str(priority)], count)
            for reason, count in stats.dead_by_reason.items():
                dead.add_metric([q, reason], count)
            paused.add_metric([q], 1 if stats.paused else 0)
            consumers.add_metric([q], stats.consumers)
        yield from (messages, oldest, trimmed, ready, dead, paused, consumers)

    def _workers(self) -> Iterator[Any]:
        by_state = GaugeMetricFamily("taskqueue_workers", "Workers by state", labels=["state"])
        per_consumer = ["worker", "consumer"]
        up = GaugeMetricFamily(
            "taskqueue_worker_up", "1 while a worker heartbeats within its window, else 0",
            labels=[*per_consumer, "state"],
        )  # fmt: skip
        active = GaugeMetricFamily("taskqueue_worker_active_tasks", "Tasks running now",
                                   labels=per_consumer)  # fmt: skip
        processed = CounterMetricFamily(
            "taskqueue_worker_processed_tasks", "Tasks the worker received", labels=per_consumer
        )
        returned = CounterMetricFamily(
            "taskqueue_worker_returned_messages",
            "In-flight messages returned to their queues after the worker went away",
            labels=per_consumer,
        )
        failed = CounterMetricFamily(
            "taskqueue_worker_failed_tasks", "Tasks that failed in the worker process",
            labels=per_consumer,
        )  # fmt: skip
        silent = GaugeMetricFamily(
            "taskqueue_worker_seconds_since_heartbeat", "Seconds since the worker's last beat",
            labels=per_consumer,
        )  # fmt: skip
        counts: dict[str, int] = dict.fromkeys(WorkerState, 0)
        for w in self.ops.workers.all():
            labels = [w.hostname or w.consumer_id, w.consumer_id]
            counts[w.state] = counts.get(w.state, 0) + 1
            up.add_metric([*labels, w.state], 1 if w.state == WorkerState.ONLINE else 0)
            if w.active is not None:
                active.add_metric(labels, w.active)
            if w.processed is not None:
                processed.add_metric(labels, w.processed)
            returned.add_metric(labels, w.returned)
            failed.add_metric(labels, w.failed)
            if w.seconds_since_heartbeat is not None and w.state != WorkerState.OFFLINE:
                silent.add_metric(labels, w.seconds_since_heartbeat)
        for state, count in counts.items():
            by_state.add_metric([state], count)
        yield from (by_state, up, active, processed, failed, returned, silent)
