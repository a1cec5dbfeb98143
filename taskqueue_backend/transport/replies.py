"""Reading Redis replies: bytes, str or nothing, as text, integers and times.

Shared by every reader of the broker's keys (inspector, dead letters, worker registry,
audit log, metrics). Text that is not UTF-8 shows as escapes, never as an error.
"""

from __future__ import annotations

from typing import Any


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def as_int(value: Any) -> int | None:
    """An integer field or score (``None`` when missing or not a number)."""
    text = as_text(value)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return int(float(text))  # a sorted-set score may come back as "1.7e+12"
    except ValueError:
        return None


def as_seconds(value_ms: Any) -> float | None:
    """Epoch milliseconds as epoch seconds."""
    text = as_text(value_ms)
    return float(text) / 1000 if text else None
