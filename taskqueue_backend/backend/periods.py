"""The time grid the PostgreSQL history table is partitioned on, and the partitions' names.

A partition holds the history rows of one period: a UTC day (the default), a week from Monday
or a calendar month (``taskqueue_history_partition``). Its bounds are ``[start, end)`` in UTC
and its name is the history table's followed by ``_p`` and the start's date
(``tq_task_events_p20261207``). Two more partitions exist beside the grid: ``_default``, which
takes a row no period holds yet (it is never lost, nor is the task's write refused), and
``_before_<date>``, the table of before the partitioning, kept as the partition of every
earlier time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Period(StrEnum):
    """How much time one history partition holds."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"

    @classmethod
    def parse(cls, value: object) -> Period:
        try:
            return cls(str(value).lower())
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise ValueError(
                f"taskqueue_history_partition must be one of {choices}, got {value!r}"
            ) from None

    def start_of(self, moment: datetime) -> datetime:
        """The start of the period holding ``moment`` (UTC midnight, Monday, the 1st)."""
        day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if self is Period.WEEKLY:
            return day - timedelta(days=day.weekday())
        if self is Period.MONTHLY:
            return day.replace(day=1)
        return day

    def after(self, start: datetime) -> datetime:
        """The start of the period after the one starting at ``start``."""
        if self is Period.DAILY:
            return start + timedelta(days=1)
        if self is Period.WEEKLY:
            return start + timedelta(days=7)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return start.replace(year=year, month=month, day=1)

    def starts(self, first: datetime, count: int) -> Iterator[tuple[datetime, datetime]]:
        """``count`` consecutive periods from the one holding ``first``, as (start, end)."""
        start = self.start_of(first)
        for _ in range(count):
            end = self.after(start)
            yield start, end
            start = end


@dataclass(frozen=True)
class Bounds:
    """One partition's range of ``at``: ``[lower, upper)``; None is unbounded (the partition
    of before the partitioning has no lower bound; the default partition has neither)."""

    lower: datetime | None
    upper: datetime | None

    def overlaps(self, lower: datetime, upper: datetime) -> bool:
        return (self.lower is None or self.lower < upper) and (
            self.upper is None or lower < self.upper
        )


def partition_name(table: str, start: datetime) -> str:
    return _checked(f"{table}_p{start.astimezone(UTC):%Y%m%d}")


def default_partition_name(table: str) -> str:
    return f"{table}_default"  # checked where partitions are made (``partition_name``)


def before_partition_name(table: str, upper: datetime) -> str:
    return _checked(f"{table}_before_{upper.astimezone(UTC):%Y%m%d}")


def is_partition_name(table: str, name: str) -> bool:
    """Whether ``name`` is one of the partitions of ``table`` (as this module names them)."""
    return re.fullmatch(re.escape(table) + r"_(p\d{8}|before_\d{8}|default)", name) is not None


#: PostgreSQL cuts longer identifiers, so two partitions' names could collide
MAX_IDENTIFIER = 63


def _checked(name: str) -> str:
    if len(name.encode()) > MAX_IDENTIFIER:
        raise ValueError(
            f"the history partition name {name!r} is longer than PostgreSQL's {MAX_IDENTIFIER} "
            "bytes; use a shorter taskqueue_table_prefix"
        )
    return name
