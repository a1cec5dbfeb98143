"""Making text safe for any database column (PostgreSQL refuses NUL and invalid UTF-8)."""

from __future__ import annotations

from typing import Any


def clean_text(value: Any) -> str | None:
    """Text with NUL removed and undecodable bytes or lone surrogates escaped."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    text = str(value)
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def clean_json(value: Any) -> Any:
    """``value`` with every string in it (keys too) made safe by ``clean_text``, for JSON
    columns (PostgreSQL's ``jsonb`` refuses ``\\u0000`` and lone surrogates)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value
