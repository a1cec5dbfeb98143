"""What people type, read one way for every tool: durations (``90s``, ``2h``, ``7d``), times
(ISO 8601, or a duration ago / from now), lists of states, and the filters built from them.

The command line's options, the API's query strings and bulk bodies and the admin UI's forms
all go through these, so ``--since 2h`` and ``?since=2h`` mean the same, a state list may be
given as a list or comma-separated, and a value outside its vocabulary is refused with the
allowed ones (``InvalidRequest``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from ..clock import from_epoch
from ..vocabulary import TaskState, UnknownValue, parse_many
from .dead_letter_entries import Filter
from .errors import InvalidRequest
from .tasks import TaskQuery

DURATION = re.compile(r"^(\d{1,5}(?:\.\d{1,3})?)\s*([smhdw])$")
#: the same, as the API's documents spell it (JSON Schema)
DURATION_PATTERN = r"^[0-9]{1,5}(\.[0-9]{1,3})?[smhdw]$"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: the longest duration there is (99999.999 weeks: almost two thousand years)
LONGEST = 100_000 * 604800


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w`` -> seconds."""
    found = DURATION.match(text.strip().lower())
    if not found:
        raise InvalidRequest(f"{text!r} is not a duration such as 90s, 15m, 2h, 7d or 1w (at "
                             "most five digits)")  # fmt: skip
    return float(found.group(1)) * UNITS[found.group(2)]


def is_duration(text: str) -> bool:
    return bool(DURATION.match(text.strip().lower()))


def parse_time(text: str | datetime | None) -> datetime | None:
    """An ISO 8601 time (naive = UTC), or a duration meaning that long ago."""
    if text is None or isinstance(text, datetime):
        return _aware(text)
    if is_duration(text):
        return from_epoch(time.time() - parse_duration(text))
    try:
        return _aware(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise InvalidRequest(
            f"{text!r} is neither an ISO 8601 time (2026-11-23T10:00) nor a duration (2h)"
        ) from None


def parse_deadline(text: str | datetime | None) -> datetime | None:
    """An ISO 8601 time (naive = UTC), or a duration meaning that long from now."""
    if isinstance(text, str) and is_duration(text):
        return from_epoch(time.time() + parse_duration(text))
    return parse_time(text)


def _aware(moment: datetime | None) -> datetime | None:
    """``moment`` in UTC; a time whose UTC falls outside the years 1 to 9999 (the first hour
    of year 1 east of Greenwich, say) is the earliest or latest time there is."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        edge = datetime.min if moment.year == datetime.min.year else datetime.max
        return edge.replace(tzinfo=UTC)


def parse_states(
    given: str | Iterable[str] | None, fold_case: bool = True
) -> tuple[TaskState, ...]:
    """Result states from a list and/or comma-separated text; an unknown one is refused."""
    try:
        return parse_many(TaskState, given, "state", fold_case)
    except UnknownValue as exc:
        raise InvalidRequest(str(exc)) from None


def task_query(
    state: str | Iterable[str] | None = None,
    name: str | None = None,
    queue: str | None = None,
    worker: str | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    text: str | None = None,
    sort: str = "updated",
    ascending: bool = False,
) -> TaskQuery:
    """Which results to list, from what a person gave (see the module docstring)."""
    low, high = parse_time(since), parse_time(until)
    if low is not None and high is not None and low > high:
        raise InvalidRequest("since is after until")
    return TaskQuery(states=parse_states(state), name=name or None, queue=queue or None,
                     worker=worker or None, since=low, until=high, text=text or None,
                     sort=f"{sort}_at", ascending=ascending)  # fmt: skip


def dead_letter_filter(
    queue: str | None = None,
    task: str | None = None,
    reason: str | None = None,
    exception: str | None = None,
    text: str | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
) -> Filter:
    """Which dead letters an operation applies to, from what a person gave."""
    return Filter(queue=queue or None, task_name=task or None, reason=reason or None,
                  exc_type=exception or None, text=text or None, since=parse_time(since),
                  until=parse_time(until))  # fmt: skip
