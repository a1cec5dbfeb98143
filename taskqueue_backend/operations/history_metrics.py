"""Prometheus counters of what the history records: task events by name, runtimes and queue
waits — each history row counted once, kept beside the broker so every control-plane process
(and the next one after a restart) exposes the same, ever-growing totals.

A scrape first folds in the history rows written since the last fold (a range of the
primary key, one aggregate query: its cost follows the throughput since the previous scrape,
never the size of the tables), then reads the totals:

- ``taskqueue_task_events_total{event, task}``: received, started, succeeded, failed, retried,
  revoked, dead-lettered, returned (a redelivery after a worker loss) and replayed;
- ``taskqueue_task_runtime_seconds`` (started to finished) and
  ``taskqueue_task_queue_wait_seconds`` (published to started): histograms of the tasks
  that finished.

Counting starts when a result store is first scraped (earlier rows are history, not counted).
Label cardinality is bounded: the first ``MAX_NAMES`` task names get their own label, later
ones are summed as ``(other)``. A fold handles at most ``MAX_ROWS`` rows; a longer backlog
(no scrape for a long while) is skipped and counted in ``taskqueue_task_events_skipped_total``
rather than making one scrape slow. One process folds at a time (a short Redis lock); the
others read the totals as they are.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .. import lifecycle
from ..backend import listing

if TYPE_CHECKING:
    from ..transport.admin import BrokerAdmin
    from .api import Operations

#: the history events counted
COUNTED_EVENTS = (lifecycle.RECEIVED, lifecycle.STARTED, lifecycle.SUCCEEDED, lifecycle.FAILED,
                  lifecycle.RETRIED, lifecycle.REVOKED, lifecycle.DEAD_LETTERED,
                  lifecycle.RETURNED, lifecycle.REPLAYED)  # fmt: skip
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
MAX_NAMES = 100
MAX_ROWS = 100_000
LOCK_SECONDS = 10
OTHER = "(other)"


class Tally:
    """The totals of one result store, in one Redis hash (and a set of the labelled names)."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops
        assert ops.results is not None
        table = ops.results.tables.events
        self.store = hashlib.sha256(f"{table.schema}.{table.name}".encode()).hexdigest()[:16]

    @property
    def data(self) -> BrokerAdmin:
        return self.ops.broker.admin

    def fold(self) -> None:
        """Count the history rows written since the last fold (if no other process is)."""
        if not self.data.tally_lock(self.store, LOCK_SECONDS):
            return
        try:
            self._fold()
        finally:
            self.data.tally_unlock(self.store)

    def _fold(self) -> None:
        store = self.ops.results
        assert store is not None
        newest = listing.last_event_id(store)
        last = self.data.tally(self.store).get("last_id")
        if not last:  # first scrape of this store: count from now on
            self.data.tally_add(self.store, newest)
            return
        low = int(last)
        if newest <= low:
            return
        if newest - low > MAX_ROWS:
            self.data.tally_add(self.store, newest, {"skipped": newest - low})
            return
        counts, finished = listing.counted_events(store, COUNTED_EVENTS, low, newest)
        labelled = self.data.tally_names(self.store)
        new_names = []
        for name in sorted({name for _, name in counts}):
            if name not in labelled and len(labelled) < MAX_NAMES:
                labelled.add(name)
                new_names.append(name)
        increments: Counter[str] = Counter()
        amounts: dict[str, float] = {}
        for (event, name), n in counts.items():
            increments[f"e|{event}|{name if name in labelled else OTHER}"] += n
        for sent, started, done in finished:
            if started is not None and done is not None:
                _observe(increments, amounts, "runtime", (done - started).total_seconds())
            if sent is not None and started is not None:
                _observe(increments, amounts, "wait", (started - sent).total_seconds())
        self.data.tally_add(self.store, newest, increments, amounts, new_names)

    def read(self) -> dict[str, str]:
        return self.data.tally(self.store)


def _observe(counts: Counter[str], amounts: dict[str, float], metric: str, seconds: float) -> None:
    seconds = max(seconds, 0.0)
    bucket = next((str(b) for b in BUCKETS if seconds <= b), "+Inf")
    counts[f"{metric}|{bucket}"] += 1
    amounts[f"{metric}|sum"] = amounts.get(f"{metric}|sum", 0.0) + seconds


class HistoryCollector(Collector):
    """The counters above, for a ``prometheus_client`` registry."""

    def __init__(self, ops: Operations) -> None:
        self.tally = Tally(ops)

    def collect(self) -> Iterator[Any]:
        self.tally.fold()
        totals = self.tally.read()
        events = CounterMetricFamily("taskqueue_task_events", "History events by task name",
                                     labels=["event", "task"])  # fmt: skip
        for field, value in sorted(totals.items()):
            if field.startswith("e|"):
                _, event, name = field.split("|", 2)
                events.add_metric([event, name], int(value))
        yield events
        skipped = CounterMetricFamily(
            "taskqueue_task_events_skipped",
            f"History rows not counted: a backlog of more than {MAX_ROWS} rows between scrapes",
        )  # fmt: skip
        skipped.add_metric([], int(totals.get("skipped", 0)))
        yield skipped
        yield _histogram(totals, "runtime", "taskqueue_task_runtime_seconds",
                         "Started to finished, of the tasks that finished")  # fmt: skip
        yield _histogram(totals, "wait", "taskqueue_task_queue_wait_seconds",
                         "Published to started, of the tasks that finished")  # fmt: skip


def _histogram(totals: dict[str, str], metric: str, name: str, documentation: str) -> Any:
    cumulative, buckets = 0, []
    for bound in (*[str(b) for b in BUCKETS], "+Inf"):
        cumulative += int(totals.get(f"{metric}|{bound}", 0))
        buckets.append((bound, cumulative))
    return HistogramMetricFamily(name, documentation, buckets=buckets,
                                 sum_value=float(totals.get(f"{metric}|sum", 0.0)))  # fmt: skip
