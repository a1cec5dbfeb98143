"""How a load test's figures are shown: a side-by-side table with ratios, and the JSON report.

The JSON report (``--json-report PATH``, or stdout with ``--json``) is one object:

- ``settings``: the load as asked for (tasks, publishers, priorities, failure rate, duration,
  workers, concurrency, pool, prefetch multiplier, timeout, seed, queue) and where it ran
  (broker and result backend URLs without passwords, record URL);
- ``runs``: one object per transport (``taskqueue``, and ``stock`` with ``--compare-stock``)
  holding ``transport``, ``key_prefix`` and the figures named in
  ``taskqueue_backend.loadtest.stats``;
- ``ratios``: with ``--compare-stock``, ``throughput_tasks_per_s`` and ``publish_rate_per_s``
  as taskqueue / stock, every ``end_to_end_ms_*`` and ``queue_wait_ms_*`` percentile and
  ``inversions`` as stock / taskqueue (so above 1 always favours taskqueue); null when the
  denominator is 0 (an inversion ratio is null when taskqueue had none). Without a
  comparison, ``ratios`` is null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .app import OURS, STOCK

LATENCIES = ("end_to_end_ms", "queue_wait_ms")
POINTS = ("p50", "p95", "p99", "max")


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def ratios(ours: Mapping[str, Any], stock: Mapping[str, Any]) -> dict[str, float | None]:
    """Each ratio oriented so that above 1 favours taskqueue (see the module docstring)."""
    found = {
        key: _ratio(ours[key], stock[key])
        for key in ("throughput_tasks_per_s", "publish_rate_per_s")
    }
    for name in LATENCIES:
        for point in POINTS:
            found[f"{name}_{point}"] = _ratio(stock[name][point], ours[name][point])
    found["inversions"] = _ratio(stock["inversions"], ours["inversions"])
    return found


def document(settings: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON report."""
    compared = OURS in runs and STOCK in runs
    return {
        "settings": dict(settings),
        "runs": {name: dict(run) for name, run in runs.items()},
        "ratios": ratios(runs[OURS], runs[STOCK]) if compared else None,
    }


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _two_decimals(value: float | None) -> str:
    return _number(value, 2)


def _latency(name: str, point: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda run: run[name][point]


#: (label, how to read it from a run, how to print it, ratio key or None)
Row = tuple[str, Callable[[Mapping[str, Any]], Any], Callable[[Any], str], str | None]


def _rows() -> list[Row]:
    rows: list[Row] = [
        ("tasks published", lambda r: r["published"], _count, None),
        ("  with fail=True", lambda r: r["fail_requested"], _count, None),
        ("finished", lambda r: r["finished"], _count, None),
        ("  failed", lambda r: r["failed"], _count, None),
        ("lost", lambda r: r["lost"], _count, None),
        ("duplicates", lambda r: r["duplicates"], _count, None),
        ("throughput (tasks/s, first publish to last finish)",
         lambda r: r["throughput_tasks_per_s"], _number, "throughput_tasks_per_s"),
        ("publish rate (msg/s)", lambda r: r["publish_rate_per_s"], _number,
         "publish_rate_per_s"),
    ]  # fmt: skip
    for name, label in (("end_to_end_ms", "end-to-end"), ("queue_wait_ms", "queue wait")):
        for point in POINTS:
            rows.append((f"{label} {point} (ms)", _latency(name, point), _two_decimals,
                         f"{name}_{point}"))  # fmt: skip
    rows += [
        ("priority inversions", lambda r: r["inversions"], _count, "inversions"),
        ("  per 1,000 tasks", lambda r: r["inversions_per_1000"], _two_decimals, None),
        ("worker processes that ran tasks", lambda r: r["worker_processes"], _count, None),
    ]
    return rows


def _ratio_text(key: str | None, found: Mapping[str, float | None] | None,
                runs: Mapping[str, Mapping[str, Any]]) -> str:  # fmt: skip
    if key is None or found is None:
        return ""
    value = found.get(key)
    if value is not None:
        return f"{value:.2f}x"
    if key == "inversions":
        return "none either" if runs[STOCK]["inversions"] == 0 else "inf (none here)"
    return "-"


def render(report: Mapping[str, Any]) -> list[str]:
    """The printed table: one column per transport, then the ratio column when compared."""
    runs: Mapping[str, Mapping[str, Any]] = report["runs"]
    found: Mapping[str, float | None] | None = report["ratios"]
    names = [name for name in (OURS, STOCK) if name in runs]
    headings = {OURS: "taskqueue", STOCK: "stock redis://"}
    label_width = 52
    header = f"{'':{label_width}}" + "".join(f"{headings[n]:>16}" for n in names)
    lines = [header + ("  ratio" if found is not None else "")]
    for label, read, show, key in _rows():
        cells = "".join(f"{show(read(runs[n])):>16}" for n in names)
        ratio = _ratio_text(key, found, runs)
        lines.append(f"{label:{label_width}}{cells}" + (f"  {ratio}" if ratio else ""))
    if found is not None:
        lines.append("ratio > 1 favours taskqueue: throughput and publish rate are taskqueue / "
                     "stock, latencies and inversions stock / taskqueue")  # fmt: skip
    return [line.rstrip() for line in lines]
