"""Line charts drawn on the server as SVG (no chart library, nothing fetched by the browser):
the geometry of each series over a timeline, its axis ticks and a text summary for screen
readers. The template draws them (``_macros.html``: ``line_chart``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

WIDTH, HEIGHT = 600, 180
LEFT, RIGHT, TOP, BOTTOM = 44, 592, 10, 156


@dataclass
class Line:
    label: str
    css: str  # the stylesheet's class for its colour
    points: str  # SVG polyline points
    total: float


@dataclass
class Chart:
    title: str
    unit: str
    lines: list[Line] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    x_ticks: list[tuple[float, str, str]] = field(default_factory=list)  # x, text-anchor, label
    summary: str = ""
    width: int = WIDTH
    height: int = HEIGHT
    plot: tuple[int, int, int, int] = (LEFT, TOP, RIGHT, BOTTOM)


def _nice_ceiling(value: float) -> float:
    """The axis maximum: 1, 2, 2.5 or 5 times a power of ten, at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _label(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value / 1000:g}k"


def line_chart(
    title: str, unit: str, series: list[tuple[str, str, list[float]]], start: datetime,
    width_seconds: float, summary: str,
) -> Chart:  # fmt: skip
    """``series``: (label, css class, one value per interval from ``start``)."""
    buckets = max((len(values) for _, _, values in series), default=0)
    top = _nice_ceiling(max((max(values, default=0) for _, _, values in series), default=0))
    chart = Chart(title, unit, summary=summary)

    def x(i: float) -> float:
        return LEFT + (RIGHT - LEFT) * (i + 0.5) / max(buckets, 1)

    def y(v: float) -> float:
        return BOTTOM - (BOTTOM - TOP) * v / top

    for label, css, values in series:
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        chart.lines.append(Line(label, css, points, sum(values)))
    chart.y_ticks = [(y(top * k / 4), _label(top * k / 4)) for k in range(5)]
    if buckets:
        for k in range(5):
            i = (buckets - 1) * k / 4
            moment = start + timedelta(seconds=width_seconds * (i + 0.5))
            anchor = "start" if k == 0 else "end" if k == 4 else "middle"
            chart.x_ticks.append((x(i), anchor, moment.strftime("%H:%M")))
    return chart
