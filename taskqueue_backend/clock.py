"""Time as every part of the package reads and writes it: epoch milliseconds in Redis, UTC
datetimes in the result store and in every view, ISO 8601 in JSON."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    """Epoch milliseconds: the unit of every time the broker keeps in Redis."""
    return int(time.time() * 1000)


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_epoch(seconds: float | None) -> datetime | None:
    """A UTC datetime from epoch seconds (``None`` stays ``None``)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def from_epoch_ms(milliseconds: float | None) -> datetime | None:
    return None if milliseconds is None else datetime.fromtimestamp(milliseconds / 1000, UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``: the one shape of a time in every JSON view."""
    utc = as_utc(moment)
    if utc is None:
        return None
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_since(moment: datetime | None, now: float | None = None) -> float | None:
    if moment is None:
        return None
    return max((time.time() if now is None else now) - moment.timestamp(), 0.0)
