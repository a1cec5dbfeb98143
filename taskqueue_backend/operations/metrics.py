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
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
)
from prometheus_client.registry import Collector

from .. import lifecycle
from ..transport.replies import as_int

if TYPE_CHECKING:
    from .api import Operations


class HistoryCollector(Collector):
    """Task counts and durations from the result store's history, over the last hour (each a
    snapshot: gauges, and gauge histograms for the durations), through the history's
    indexes; task names beyond the ``TOP_NAMES`` busiest are summed as ``(other)``, so the
    label set stays bounded."""

    TOP_NAMES = 50
    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    def collect(self) -> Iterator[Any]:
        from ..backend import listing
        from ..clock import utcnow

        assert self.ops.results is not None
        since = utcnow() - timedelta(hours=1)
        events = GaugeMetricFamily(
            "taskqueue_task_events_last_hour", "History events of the last hour by task name",
            labels=["event", "task"],
        )  # fmt: skip
        counted = listing.events_by_name(self.ops.results, COUNTED_EVENTS, since)
        busiest = {name for name, _ in sorted(
            _totals(counted).items(), key=lambda item: -item[1])[: self.TOP_NAMES]}  # fmt: skip
        folded: dict[tuple[str, str], int] = {}
        for (event, name), n in counted.items():
            key = (event, name if name in busiest else "(other)")
            folded[key] = folded.get(key, 0) + n
        for (event, name), n in sorted(folded.items()):
            events.add_metric([event, name], n)
        yield events
        stages = listing.recent_stages(self.ops.results, since)
        runs = [(e - s).total_seconds() for _, s, e, _ in stages if s and e]
        waits = [(s - p).total_seconds() for p, s, _, _ in stages if p and s]
        yield self._histogram(
            "taskqueue_task_runtime_seconds",
            "Started to finished, tasks finished in the last hour",
            runs,
        )
        yield self._histogram(
            "taskqueue_task_queue_wait_seconds",
            "Published to started, tasks finished in the last hour",
            waits,
        )

    def _histogram(self, name: str, documentation: str, values: list[float]) -> Any:
        buckets = [(str(b), sum(1 for v in values if v <= b)) for b in self.BUCKETS]
        buckets.append(("+Inf", len(values)))
        return GaugeHistogramMetricFamily(
            name, documentation, buckets=buckets, gsum_value=sum(max(v, 0.0) for v in values)
        )


def _totals(counted: dict[tuple[str, str], int]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for (_, name), n in counted.items():
        totals[name] = totals.get(name, 0) + n
    return totals


#: the history events the metrics count (redeliveries are the ``returned`` ones)
COUNTED_EVENTS = (lifecycle.RECEIVED, lifecycle.STARTED, lifecycle.SUCCEEDED, lifecycle.FAILED,
                  lifecycle.RETRIED, lifecycle.REVOKED, lifecycle.DEAD_LETTERED,
                  lifecycle.RETURNED, lifecycle.REPLAYED)  # fmt: skip


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
        pipe = self.ops.broker.client.pipeline(transaction=False)
        for stats in all_stats:
            pipe.hget(self.ops.broker.queue_keys(stats.queue).state, "dead_trimmed")
        for stats, trims in zip(all_stats, pipe.execute(), strict=True):
            q = stats.queue
            for state, count in (("ready", stats.ready), ("delayed", stats.delayed),
                                 ("inflight", stats.inflight), ("dead", stats.dead)):  # fmt: skip
                messages.add_metric([q, state], count)
            if stats.oldest_ready_age is not None:
                oldest.add_metric([q], stats.oldest_ready_age)
            trimmed.add_metric([q], as_int(trims) or 0)
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
        counts = {"online": 0, "stale": 0, "offline": 0}
        for w in self.ops.workers.all():
            labels = [w.hostname or w.consumer_id, w.consumer_id]
            counts[w.state] = counts.get(w.state, 0) + 1
            up.add_metric([*labels, w.state], 1 if w.state == "online" else 0)
            if w.active is not None:
                active.add_metric(labels, w.active)
            if w.processed is not None:
                processed.add_metric(labels, w.processed)
            returned.add_metric(labels, w.returned)
            failed.add_metric(labels, w.failed)
            if w.seconds_since_heartbeat is not None and w.state != "offline":
                silent.add_metric(labels, w.seconds_since_heartbeat)
        for state, count in counts.items():
            by_state.add_metric([state], count)
        yield from (by_state, up, active, processed, failed, returned, silent)
