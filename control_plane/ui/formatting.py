"""How the admin UI writes values: times in UTC, ages and durations a person reads at a glance,
short ids, payloads as indented JSON — or, for pickle, yaml and other content types, as an
opaque size and type (never deserialized) — and long dotted names that wrap between their
parts. Everything is returned as plain text, so Jinja's autoescaping applies to it like to any
other user data, but ``breakable``'s names: escaped here, with only ``<wbr>`` added."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from markupsafe import Markup, escape

#: after these a long name may wrap (``proj.billing.tasks.charge_customer``, ``w1@host``)
_NAME_BREAKS = re.compile(r"(?<=[._@:/])")


def clock(moment: datetime | None, precise: bool = False) -> str:
    """``2026-12-05 14:03:07`` (UTC); ``precise``: with milliseconds (``14:03:07.120``)."""
    if moment is None:
        return "–"
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f" if precise else
                                           "%Y-%m-%d %H:%M:%S")  # fmt: skip
    return text[:-3] if precise else text


def iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def duration(seconds: float | None) -> str:
    """``850 ms``, ``4.2 s``, ``3 min 20 s``, ``2 h 5 min``, ``3 d 4 h``."""
    if seconds is None:
        return "–"
    seconds = max(float(seconds), 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "–"
    now = now or datetime.now(UTC)
    return duration((now - moment).total_seconds()) + " ago"


def short_id(task_id: str | None, length: int = 8) -> str:
    if not task_id:
        return "–"
    return task_id if len(task_id) <= length + 1 else task_id[:length] + "…"


def number(value: float | int | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def is_opaque(value: Any) -> bool:
    """A payload the operations layer did not decode (a content type other than JSON)."""
    return isinstance(value, dict) and value.get("opaque") is True and "bytes" in value


def payload(value: Any) -> str:
    """A decoded payload as indented JSON; an opaque one as its content type and size."""
    if is_opaque(value):
        return f"(not shown: {value.get('content_type') or 'unknown type'}, {value['bytes']} bytes)"
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def details(found: dict[str, Any] | None, *skip: str) -> str:
    """``key=value, …`` of a detail mapping, values as compact JSON, ``skip`` left out."""
    parts = []
    for key, value in sorted((found or {}).items()):
        if key in skip or value in (None, "", [], {}):
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        parts.append(f"{key}={text}")
    return ", ".join(parts)


def breakable(name: str | None) -> Markup:
    """``name`` escaped, with a line-break opportunity (``<wbr>``) after each dot, underscore,
    ``@``, colon and slash: a long task or worker name wraps between its parts, never letter
    by letter, and a table cell is never narrower than its longest part."""
    if not name:
        return Markup("–")
    return Markup("<wbr>").join(escape(part) for part in _NAME_BREAKS.split(name) if part)


def install(app: Flask) -> None:
    filters = {"clock": clock, "iso": iso, "duration": duration, "ago": ago, "short_id": short_id,
               "number": number, "percent": percent, "payload": payload,
               "details": details, "breakable": breakable}  # fmt: skip
    app.jinja_env.filters.update(filters)
    app.jinja_env.tests["opaque"] = is_opaque
