"""The overview page (``/``): tasks by state and throughput over the last hour, success and
failure charts, queue depths and oldest ages, dead letters, and workers by status — each
read through the operations layer, updating live."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import g, render_template

from taskqueue_backend import lifecycle
from taskqueue_backend.operations import Operations
from taskqueue_backend.operations.stats import Timeline

from .blueprint import bp
from .charts import Chart, line_chart
from .session import page


def charts(timeline: Timeline) -> list[Chart]:
    ok = [float(n) for n in timeline.series[lifecycle.SUCCEEDED]]
    failed = [float(n) for n in timeline.series[lifecycle.FAILED]]
    rate = [100.0 * f / (s + f) if s + f else 0.0 for s, f in zip(ok, failed, strict=True)]
    finished = sum(ok) + sum(failed)
    overall = 100.0 * sum(failed) / finished if finished else 0.0
    return [
        line_chart(
            "Finished tasks per minute", "tasks/min",
            [("succeeded", "line-ok", ok), ("failed", "line-failed", failed)],
            timeline.start, timeline.width_seconds,
            f"Last hour: {sum(ok):,.0f} succeeded and {sum(failed):,.0f} failed.",
        ),
        line_chart(
            "Failure rate per minute", "%", [("failed %", "line-failed", rate)],
            timeline.start, timeline.width_seconds,
            f"Last hour: {overall:.1f} % of finished tasks failed.",
        ),
    ]  # fmt: skip


def overview_data(ops: Operations) -> dict[str, Any]:
    found: dict[str, Any] = {"stats": None, "charts": [], "queues": None, "workers": None,
                             "dead": None}  # fmt: skip
    if ops.results is not None:
        timeline = ops.timeline(minutes=60, width_seconds=60)  # read once: charts and stats
        found["stats"] = ops.stats(timeline)
        found["charts"] = charts(timeline)
    if ops.has_broker:
        queues = ops.queues.all()
        found["queues"] = queues
        found["dead"] = sum(q.dead for q in queues)
        found["workers"] = Counter(w.state for w in ops.workers.all())
    return found


@bp.get("/")
@page("viewer")
def overview() -> str:
    return render_template("ui/overview.html", section="overview", **overview_data(g.ops))
