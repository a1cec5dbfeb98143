"""The one JSON shape of every view: dataclasses as objects, times as UTC ISO 8601.

Every data object the operations layer returns is a dataclass; :func:`to_json` turns it (or a
list or page of them) into plain JSON values: datetimes as ``2026-12-01T20:15:25.123Z``,
durations and ages as seconds, bytes as text with undecodable bytes escaped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from ..clock import iso

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a listing; pass ``next_cursor`` back for the next (None: the last page)."""

    items: list[T]
    next_cursor: str | None = None


def to_json(value: Any) -> Any:
    """Plain JSON values (dict, list, str, number, bool, None) for any view object."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    return value
