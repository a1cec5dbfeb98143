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
