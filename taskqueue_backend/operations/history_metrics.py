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
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .. import lifecycle
from ..backend import listing
from ..transport.replies import as_text

if TYPE_CHECKING:
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
        digest = hashlib.sha256(f"{table.schema}.{table.name}".encode()).hexdigest()[:16]
        base = ops.broker.global_keys.metrics(digest)
        self.key, self.names_key, self.lock_key = base, f"{base}:names", f"{base}:lock"

    @property
    def client(self) -> Any:
        return self.ops.broker.client

    def fold(self) -> None:
        """Count the history rows written since the last fold (if no other process is)."""
        if not self.client.set(self.lock_key, "1", nx=True, ex=LOCK_SECONDS):
            return
        try:
            self._fold()
        finally:
            self.client.delete(self.lock_key)

    def _fold(self) -> None:
        store = self.ops.results
        assert store is not None
        newest = listing.last_event_id(store)
        last = as_text(self.client.hget(self.key, "last_id"))
        if last is None:  # first scrape of this store: count from now on
            self.client.hset(self.key, "last_id", newest)
            return
        low = int(last)
        if newest <= low:
            return
        pipe = self.client.pipeline(transaction=True)
        if newest - low > MAX_ROWS:
            pipe.hincrby(self.key, "skipped", newest - low)
            pipe.hset(self.key, "last_id", newest)
            pipe.execute()
            return
        counts, finished = listing.counted_events(store, COUNTED_EVENTS, low, newest)
        labelled = {as_text(n) for n in cast(set[bytes], self.client.smembers(self.names_key))}
        for name in sorted({name for _, name in counts}):
            if name not in labelled and len(labelled) < MAX_NAMES:
                labelled.add(name)
                pipe.sadd(self.names_key, name)
        for (event, name), n in counts.items():
            pipe.hincrby(self.key, f"e|{event}|{name if name in labelled else OTHER}", n)
        for sent, started, done in finished:
            if started is not None and done is not None:
                self._observe(pipe, "runtime", (done - started).total_seconds())
            if sent is not None and started is not None:
                self._observe(pipe, "wait", (started - sent).total_seconds())
        pipe.hset(self.key, "last_id", newest)
        pipe.execute()

    def _observe(self, pipe: Any, metric: str, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        bucket = next((str(b) for b in BUCKETS if seconds <= b), "+Inf")
        pipe.hincrby(self.key, f"{metric}|{bucket}", 1)
        pipe.hincrbyfloat(self.key, f"{metric}|sum", seconds)

    def read(self) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.key))
        return {as_text(k) or "": as_text(v) or "" for k, v in raw.items()}


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
