"""Parsing the values people type: durations (``90s``, ``2h``, ``7d``) and times."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import click

from ..clock import from_epoch

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w`` -> seconds."""
    found = _DURATION.match(text.strip().lower())
    if not found:
        raise click.BadParameter(f"{text!r} is not a duration such as 90s, 15m, 2h, 7d or 1w")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time (naive = UTC) or a duration meaning that long ago."""
    if text is None:
        return None
    if _DURATION.match(text.strip().lower()):
        return from_epoch(time.time() - parse_duration(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 time (2026-11-23T10:00) nor a duration (2h)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_deadline(text: str | None) -> datetime | None:
    """An ISO 8601 time (naive = UTC) or a duration meaning that long from now."""
    if text is None:
        return None
    if _DURATION.match(text.strip().lower()):
        return from_epoch(time.time() + parse_duration(text))
    return parse_time(text)
