"""How the commands print: aligned tables with readable times for people, ``--json`` for
scripts (the operations layer's one JSON shape).

Tables, shortened cells and ``key: value`` pairs show stored text (task names, exception
messages, tracebacks, arguments) with every control character escaped (``\\x1b``, ``\\x07``,
``\\u009b``): that text comes from whoever published or ran a task, and a terminal acts on
control sequences — window titles, hyperlinks, clearing the screen, moving the cursor — so a
dead letter could otherwise rewrite what an operator sees. ``--json`` needs no escaping: JSON
spells every control character as ``\\u00XX`` already.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import click

from ..clock import as_utc, seconds_since
from ..operations import to_json

#: C0 controls, DEL and C1 controls; ``_BUT_NEWLINE`` spares the newline ``pairs`` splits on
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROLS_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    # C1 as \u0080..\u009f: \x9b would read as the byte 0x9b, not as the character
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def visible(text: str, newlines: bool = False) -> str:
    """``text`` with every control character escaped (the newline too unless ``newlines``)."""
    return (_CONTROLS_BUT_NEWLINE if newlines else _CONTROLS).sub(_escaped, text)


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
    """One line of at most ``width`` characters, control characters escaped."""
    text = "-" if value is None or value == "" else visible(str(value).replace("\n", " "))
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str], empty: str = "(none)") -> None:
    cells = [[visible(str(c)) for c in row] for row in rows]
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
    """One ``key: value`` line each (multi-line values indented below their key); control
    characters escaped, the newlines of a multi-line value aside."""
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        name = visible(key)
        text = "-" if value is None or value == "" else visible(str(value), newlines=True)
        if "\n" in text:
            click.echo(f"{name}:")
            for line in text.rstrip("\n").split("\n"):  # the newline alone starts a line
                click.echo(f"    {line}")
        else:
            click.echo(f"{name.ljust(width)}  {text}")
