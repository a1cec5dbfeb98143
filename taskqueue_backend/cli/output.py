"""How the commands print: aligned tables for people, ``--json`` for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def shorten(value: Any, width: int = 40) -> str:
    text = "-" if value is None or value == "" else str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    if not cells:
        click.echo("(none)")
        return
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def as_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


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
