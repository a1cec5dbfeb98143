"""The figures of one load-test run, computed from what was published and what was recorded.

Definitions (the JSON report and the printed table use these names):

- ``published``: tasks handed to the broker; ``fail_requested``: of those, published with
  ``fail=True``. The plan (priorities, failures) is drawn once per invocation, so both
  transports of a ``--compare-stock`` run get the very same tasks.
- ``finished``: distinct tasks that left a record; ``failed``: of those, the ones that raised.
- ``lost``: published tasks that never left a record (before the deadline and the workers'
  shutdown); ``duplicates``: records beyond the first one of a task.
- ``throughput_tasks_per_s``: finished tasks / (last finish - first publish);
  ``publish_rate_per_s``: published tasks / (last publish returned - first publish began).
- ``end_to_end_ms``: published -> finished; ``queue_wait_ms``: published -> started; each as
  p50, p95, p99 (nearest rank: the smallest value with at least p% of the values at or
  below it) and max, in milliseconds. Published is the time taken just before the publish call.
- ``inversions``: pairs of tasks (i, j) where j has a better priority (a lower number: the
  order of kombu's Redis transport and of this one by default), j was published before i
  started, and i started before j: j was waiting when the worse i was started. Counted from
  each task's first record in O(n * P * log n) for P priority levels (per-priority sorted
  arrays and ``bisect``); ``inversions_per_1000``: per 1,000 finished tasks. Several worker
  processes and prefetching make some inversions inherent; compare transports in one run.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class PlannedTask:
    """One task of the plan: its sequence number, priority and whether it must fail."""

    seq: int
    priority: int
    fail: bool


@dataclass(frozen=True)
class TaskTiming:
    """When one task was published and started (epoch seconds), and at which priority."""

    priority: int
    published_at: float
    started_at: float


@dataclass
class RunData:
    """The raw outcome of one run: the plan, publish times (by seq) and the records."""

    plan: Sequence[PlannedTask]
    published_at: Sequence[float | None]
    publish_began: float
    publish_ended: float
    records: Sequence[dict[str, Any]]


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """``{"p50", "p95", "p99", "max"}`` of ``values`` by nearest rank (None when empty)."""
    ordered = sorted(values)
    if not ordered:
        return {**{f"p{p}": None for p in PERCENTILES}, "max": None}
    found: dict[str, float | None] = {
        f"p{p}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in PERCENTILES
    }
    found["max"] = ordered[-1]
    return found


def _start_after_publish(task: TaskTiming) -> float:
    """The start time, nudged just past the publish time if a clock put it at or before it.

    The count below relies on every task starting strictly after it was published (true on
    one host's clock: the publish time is taken before the publish call)."""
    if task.started_at > task.published_at:
        return task.started_at
    return math.nextafter(task.published_at, math.inf)


def count_inversions(tasks: Sequence[TaskTiming]) -> int:
    """Pairs (i, j): j's priority better (lower) than i's, published before i started, and
    started after i started. O(n * P * log n) for P priority levels.

    For a level q better than i's, the tasks of q that were waiting when i started are those
    published before i's start minus those started at or before it (a task started by then was
    published before then, so the second set lies inside the first)."""
    publishes: dict[int, list[float]] = {}
    starts: dict[int, list[float]] = {}
    for task in tasks:
        publishes.setdefault(task.priority, []).append(task.published_at)
        starts.setdefault(task.priority, []).append(_start_after_publish(task))
    for level in publishes:
        publishes[level].sort()
        starts[level].sort()
    levels = sorted(publishes)
    total = 0
    for task in tasks:
        started = _start_after_publish(task)
        for level in levels:
            if level >= task.priority:
                break
            total += bisect_left(publishes[level], started) - bisect_right(starts[level], started)
    return total


def _rate(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


def summarize(run: RunData) -> dict[str, Any]:
    """The figures of one run (see the module docstring for each name)."""
    planned = {task.seq: task for task in run.plan}
    published = [task.seq for task in run.plan if run.published_at[task.seq] is not None]
    first: dict[int, dict[str, Any]] = {}
    for record in run.records:
        first.setdefault(int(record["seq"]), record)
    finished = [seq for seq in first if seq in planned]
    timings = [
        TaskTiming(planned[seq].priority, float(run.published_at[seq] or 0.0),
                   float(first[seq]["started_at"]))
        for seq in finished
    ]  # fmt: skip
    publish_times = [run.published_at[seq] or 0.0 for seq in published]
    finish_times = [float(first[seq]["finished_at"]) for seq in finished]
    wall = max(finish_times) - min(publish_times) if finish_times and publish_times else 0.0
    inversions = count_inversions(timings)
    return {
        "published": len(published),
        "fail_requested": sum(1 for seq in published if planned[seq].fail),
        "finished": len(finished),
        "failed": sum(1 for seq in finished if first[seq].get("fail")),
        "lost": len(set(published) - set(finished)),
        "duplicates": len(run.records) - len(first),
        "throughput_tasks_per_s": _rate(len(finished), wall),
        "publish_rate_per_s": _rate(len(published), run.publish_ended - run.publish_began),
        "wall_seconds": wall,
        "publish_seconds": run.publish_ended - run.publish_began,
        "end_to_end_ms": percentiles(
            (float(first[s]["finished_at"]) - (run.published_at[s] or 0.0)) * 1000 for s in finished
        ),
        "queue_wait_ms": percentiles((t.started_at - t.published_at) * 1000 for t in timings),
        "inversions": inversions,
        "inversions_per_1000": inversions * 1000 / len(finished) if finished else None,
        "worker_processes": len({r.get("pid") for r in run.records}),
    }
