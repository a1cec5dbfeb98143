"""How the commands print: aligned tables with readable times for people, ``--json`` for
scripts (the operations layer's one JSON shape)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import click

from ..clock import as_utc, seconds_since
from ..operations import to_json


def when(moment: datetime | None) -> str:
    """``2026-12-01 20:15:25`` (UTC)."""
    utc = as_utc(moment)
    return "-" if utc is None else utc.strftime("%Y-%m-%d %H:%M:%S")


def precise(moment: datetime | None) -> str:
    """``20:15:25.123`` (UTC): for a task's history, where milliseconds tell the order."""
    utc = as_utc(moment)
    return "-" if utc is None else utc.strftime("%H:%M:%S.%f")[:-3]


def duration(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``2h10m``, ``3d04h``."""
    if seconds is None:
        return "-"
    seconds = abs(seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                          ("m", 60, "s", 1)):  # fmt: skip
        if whole >= size:
            return f"{whole // size}{unit}{(whole % size) // small_size:02d}{small}"
    return f"{whole}s"


def ago(moment: datetime | None) -> str:
    """``12s ago``."""
    return "-" if moment is None else f"{duration(seconds_since(moment))} ago"


def due(moment: datetime | None) -> str:
    """``in 9m57s`` (or ``due`` once it has passed)."""
    if moment is None:
        return "-"
    left = moment.timestamp() - time.time()
    return f"in {duration(left)}" if left > 0 else "due"


def shorten(value: Any, width: int = 40) -> str:
    text = "-" if value is None or value == "" else str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str], empty: str = "(none)") -> None:
    cells = [[str(c) for c in row] for row in rows]
    if not cells:
        click.echo(empty)
        return
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def as_json(data: Any) -> None:
    click.echo(json.dumps(to_json(data), indent=2, default=str))


def pairs(data: dict[str, Any]) -> None:
    """One ``key: value`` line each (multi-line values indented below their key)."""
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        text = "-" if value is None or value == "" else str(value)
        if "\n" in text:
            click.echo(f"{key}:")
            for line in text.rstrip("\n").splitlines():
                click.echo(f"    {line}")
        else:
            click.echo(f"{key.ljust(width)}  {text}")
