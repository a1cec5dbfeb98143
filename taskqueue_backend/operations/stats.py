"""Task statistics from the history: counts, throughput, rates and percentiles, cheaply.

Every figure is read over a trailing window through an index (``task_events (event, at)``,
``results updated_at`` and ``finished_at``), never a full scan:

- ``states``: results updated in the last hour, by state;
- ``throughput``: events (received, succeeded, failed, retried, dead-lettered) in the last 1,
  5, 15 and 60 minutes, with the finished-per-second rate of each window;
- ``retry_rate`` and ``dead_letter_rate``: retried and dead-lettered per finished task over the
  last hour;
- ``runtime`` (started → finished) and ``queue_wait`` (published → started) percentiles of the
  newest 10,000 tasks finished in the last hour;
- ``timeline``: the same events per minute over the last hour (the overview's charts); the
  windows above are sums of its last 1, 5, 15 and 60 minutes, so a caller that has the
  timeline already passes it and the history is read once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .. import lifecycle
from ..backend import listing
from ..clock import utcnow
from .errors import InvalidRequest

if TYPE_CHECKING:
    from .api import Operations

WINDOWS_MINUTES = (1, 5, 15, 60)
#: the most intervals one timeline has (each is a column of one query): a day by the minute
MAX_INTERVALS = 1440
COUNTED = (lifecycle.RECEIVED, lifecycle.SUCCEEDED, lifecycle.FAILED, lifecycle.RETRIED,
           lifecycle.DEAD_LETTERED)  # fmt: skip


@dataclass
class Window:
    minutes: int
    received: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    finished_per_second: float = 0.0


@dataclass
class Percentiles:
    """Seconds; ``None`` when no finished task in the window had both times."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None


@dataclass
class TaskStats:
    states: dict[str, int] = field(default_factory=dict)
    throughput: list[Window] = field(default_factory=list)
    retry_rate: float | None = None
    dead_letter_rate: float | None = None
    runtime: Percentiles = field(default_factory=Percentiles)
    queue_wait: Percentiles = field(default_factory=Percentiles)


@dataclass
class Timeline:
    """Events per interval: ``series[event][i]`` happened in ``[start + i*width, start +
    (i+1)*width)``; the last interval ends now (and takes events stamped slightly later)."""

    start: datetime
    width_seconds: float
    series: dict[str, list[int]] = field(default_factory=dict)


def task_timeline(ops: Operations, minutes: int = 60, width_seconds: int = 60) -> Timeline:
    if ops.results is None:
        raise InvalidRequest("no result store was given: the timeline comes from the history")
    if not 1 <= minutes <= 24 * 60 or not 1 <= width_seconds <= 3600:
        raise InvalidRequest("minutes must be 1 to 1440 and width_seconds 1 to 3600")
    buckets = max(1, minutes * 60 // width_seconds)
    if buckets > MAX_INTERVALS:
        raise InvalidRequest(f"{minutes} minutes in intervals of {width_seconds} s are "
                             f"{buckets} intervals; at most {MAX_INTERVALS} (widen "
                             "width_seconds)")  # fmt: skip
    start = utcnow() - timedelta(seconds=buckets * width_seconds)
    series = listing.event_timeline(ops.results, COUNTED, start, buckets, width_seconds)
    return Timeline(start, float(width_seconds), series)


def percentiles(values: list[float]) -> Percentiles:
    if not values:
        return Percentiles()
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return Percentiles(len(ordered), at(0.50), at(0.95), at(0.99), ordered[-1])


def task_stats(ops: Operations, timeline: Timeline | None = None) -> TaskStats:
    """The figures of the last hour; ``timeline``: the last hour by minute, when the caller
    has read it already (``task_timeline`` with its defaults)."""
    if ops.results is None:
        raise InvalidRequest("no result store was given: statistics come from the history")
    hourly = max(WINDOWS_MINUTES)
    if timeline is None or timeline.width_seconds != 60 or \
            len(timeline.series[lifecycle.RECEIVED]) != hourly:  # fmt: skip
        timeline = task_timeline(ops, hourly, 60)
    hour = timeline.start
    windows = []
    for minutes in WINDOWS_MINUTES:
        window = Window(minutes, **{event: sum(timeline.series[event][-minutes:])
                                    for event in COUNTED})  # fmt: skip
        window.finished_per_second = (window.succeeded + window.failed) / (minutes * 60)
        windows.append(window)
    last = windows[-1]
    finished = last.succeeded + last.failed
    stages = listing.recent_stages(ops.results, hour)
    runtimes = [(end - start).total_seconds() for _, start, end, _ in stages if start and end]
    waits = [(start - sent).total_seconds() for sent, start, _, _ in stages if sent and start]
    return TaskStats(
        states=listing.states_since(ops.results, hour),
        throughput=windows,
        retry_rate=last.retried / finished if finished else None,
        dead_letter_rate=last.dead_lettered / finished if finished else None,
        runtime=percentiles([max(r, 0.0) for r in runtimes]),
        queue_wait=percentiles([max(w, 0.0) for w in waits]),
    )
