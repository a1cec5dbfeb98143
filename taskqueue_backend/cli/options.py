"""Parsing the values people type, as click parameters: durations (``90s``, ``2h``, ``7d``)
and times — through ``operations.parsing``, so the API reads them the same way; a value that
cannot be read is a usage error (exit code 2) that says what was expected."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import click

from ..operations import InvalidRequest, parsing

T = TypeVar("T")


def _as_usage_error(parse: Callable[[str], T], text: str) -> T:
    try:
        return parse(text)
    except InvalidRequest as exc:
        raise click.BadParameter(str(exc)) from None


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w`` -> seconds."""
    return _as_usage_error(parsing.parse_duration, text)


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time (naive = UTC) or a duration meaning that long ago."""
    return None if text is None else _as_usage_error(parsing.parse_time, text)


def parse_deadline(text: str | None) -> datetime | None:
    """An ISO 8601 time (naive = UTC) or a duration meaning that long from now."""
    return None if text is None else _as_usage_error(parsing.parse_deadline, text)
