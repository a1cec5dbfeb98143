"""The request and response models of ``/api/v1``: they validate requests and are the OpenAPI
document (APIFlask generates it from them).

Responses are the operations layer's own data objects (dataclasses), wrapped for pydantic, so
the API's JSON is the same shape as the CLI's ``--json``.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    WithJsonSchema,
    model_validator,
)
from pydantic import Strict as StrictType

from taskqueue_backend.operations import (
    AuditEntry,
    DeadLetter,
    HistoryEvent,
    Outcome,
    QueueStats,
    RecoveryOutcome,
    RemoveOutcome,
    Stats,
    TaskResult,
    TaskStatus,
    WorkerInfo,
)
from taskqueue_backend.operations.parsing import (
    DURATION_PATTERN,
    LONGEST,
    parse_states,
    parse_time,
)
from taskqueue_backend.operations.stats import MAX_INTERVALS, TaskStats, Timeline
from taskqueue_backend.operations.task_actions import (
    BulkOutcome,
    RetryOutcome,
    RevokeOutcome,
    Submitted,
)
from taskqueue_backend.vocabulary import (
    BulkAction,
    DeadLetterReason,
    Signal,
    TaskState,
    WorkerState,
    list_pattern,
    values,
)

Reason = Field(default="", max_length=500, description="Why (kept in the audit log and history).")
Limit = Field(default=50, ge=1, le=1000, description="At most this many items.")
Cursor = Field(default=None, max_length=500, description="The `next_cursor` of the last page.")


# A list response is returned as its model (``WorkersOut(found)``): APIFlask would validate
# each item of a bare list against the list model.


#: no text of a request may hold a NUL (no store keeps one); the documents say so
NO_NUL = r"^[^\x00]*$"


def _documented_without_nul(schema: dict[str, Any]) -> None:
    for prop in (schema.get("properties") or {}).values():
        options = [prop, *prop.get("anyOf", [])]
        for option in [
            *options,
            *(o["items"] for o in options if isinstance(o.get("items"), dict)),
        ]:
            if option.get("type") == "string" and not {"pattern", "format", "enum"} & set(option):
                option["pattern"] = NO_NUL


class Strict(BaseModel):
    """A request model: unknown fields are refused, and so is a NUL in any text."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_documented_without_nul)

    @model_validator(mode="after")
    def _refuse_nul(self) -> Strict:
        for name, value in self:
            texts = value if isinstance(value, list | tuple) else [value]
            if any(isinstance(text, str) and "\x00" in text for text in texts):
                raise ValueError(f"{name} holds a NUL character")
        return self


#: RFC 3339 (JSON Schema's ``date-time``), and the same without an offset, read as UTC (what
#: a browser's ``datetime-local`` field sends)
ZONED = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                   r"([Zz]|[+-][0-9]{2}:[0-9]{2})$")  # fmt: skip
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
#: a calendar date (each month's days; 29 February of leap years), so that every string the
#: document allows is a time
_DATE = (rf"(?:{_YEAR}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
         rf"|(?:0[13578]|1[02])-31)|{_LEAP_YEAR}-02-29)")  # fmt: skip
LOCAL_PATTERN = rf"^{_DATE}T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{{1,6}})?)?$"
TIME_TEXT = "an ISO 8601 time (2026-11-23T10:00:00Z; without an offset it is UTC)"


def _instant(value: Any, durations: bool = False) -> Any:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        if durations and re.fullmatch(DURATION_PATTERN, value):
            return parse_time(value)
        if ZONED.match(value) or re.fullmatch(LOCAL_PATTERN, value):
            return parse_time(value)
    raise ValueError(f"give {TIME_TEXT}" + (" or a duration ago (2h)" if durations else ""))


_TIME_SCHEMAS = [{"type": "string", "format": "date-time"},
                 {"type": "string", "pattern": LOCAL_PATTERN}]  # fmt: skip
#: a time: ISO 8601 (with an offset, or UTC without one)
Instant = Annotated[datetime, BeforeValidator(_instant), WithJsonSchema({"anyOf": _TIME_SCHEMAS})]
#: a time, or a duration ago (``90s``, ``15m``, ``2h``, ``7d``, ``1w``) as the CLI takes it
Moment = Annotated[
    datetime,
    BeforeValidator(lambda value: _instant(value, durations=True)),
    WithJsonSchema({"anyOf": [*_TIME_SCHEMAS, {"type": "string", "pattern": DURATION_PATTERN}]}),
]  # fmt: skip


def _whole(value: Any) -> Any:
    """JSON Schema's ``integer`` holds 5.0 as well as 5: a whole float is its int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: numbers and flags of a JSON body are JSON numbers and booleans (``false`` is no number)
Number = Annotated[float, StrictType()]
#: whole numbers of a body, their bounds inside (before the conversion, so the document
#: shows them)
Priority = Annotated[int, StrictType(), Field(ge=0, le=255), BeforeValidator(_whole)]
BulkLimit = Annotated[int, StrictType(), Field(ge=1, le=10_000), BeforeValidator(_whole)]
Flag = Annotated[bool, StrictType()]


def _states(value: Any) -> Any:
    if value is None or isinstance(value, tuple):
        return value
    if not isinstance(value, str) and not (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        raise ValueError(STATES_TEXT)
    if isinstance(value, list) and len(value) > len(TaskState):
        raise ValueError(f"at most {len(TaskState)} states (there are no more)")
    try:
        found = parse_states(value, fold_case=False)
    except Exception as exc:  # the message lists the allowed states
        raise ValueError(str(exc)) from None
    if not found:  # ``state=`` or ``[]``: leave the field out to take every state
        raise ValueError(f"give at least one state, or leave it out; {STATES_TEXT}")
    return found


STATES_TEXT = f"Result states, comma-separated: {', '.join(values(TaskState))}."
#: result states: comma-separated in a query string; a list or comma-separated in a body
StatesQuery = Annotated[
    tuple[TaskState, ...] | None,
    BeforeValidator(_states),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": list_pattern(TaskState)},
                              {"type": "null"}], "description": STATES_TEXT}),
]  # fmt: skip
StatesBody = Annotated[
    tuple[TaskState, ...] | None,
    BeforeValidator(_states),
    WithJsonSchema({"anyOf": [
        {"type": "array", "items": {"type": "string", "enum": list(values(TaskState))},
         "minItems": 1, "maxItems": len(TaskState)},
        {"type": "string", "pattern": list_pattern(TaskState)},
        {"type": "null"},
    ], "description": STATES_TEXT}),
]  # fmt: skip


# -- tasks -------------------------------------------------------------------------------------


class Sort(StrEnum):
    updated = "updated"
    received = "received"
    finished = "finished"


class Order(StrEnum):
    desc = "desc"
    asc = "asc"


class TaskListQuery(Strict):
    state: StatesQuery = None
    name: str | None = Field(None, max_length=255, description="Task name; `*` wildcards.")
    queue: str | None = Field(None, max_length=255)
    worker: str | None = Field(None, max_length=255)
    since: Moment | None = Field(None, description="At or after (by `sort`); a time or 2h.")
    until: Moment | None = Field(None, description="At or before (by `sort`); a time or 2h.")
    q: str | None = Field(None, max_length=200, description="Text in args, kwargs, exception.")
    sort: Sort = Sort.updated
    order: Order = Order.desc
    limit: int = Limit
    cursor: str | None = Cursor


class TaskFilter(Strict):
    state: StatesBody = None
    name: str | None = Field(None, max_length=255)
    queue: str | None = Field(None, max_length=255)
    worker: str | None = Field(None, max_length=255)
    since: Moment | None = None
    until: Moment | None = None
    q: str | None = Field(None, max_length=200)


class SubmitIn(Strict):
    name: str = Field(min_length=1, max_length=255, description="The task's registered name.")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(None, min_length=1, max_length=255)
    priority: Priority | None = None
    countdown: Number | None = Field(None, ge=0, le=366 * 24 * 3600)
    eta: Instant | None = None
    reason: str = Reason


class IdempotencyHeader(BaseModel):
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=255, alias="Idempotency-Key",
        description="The same key within 24 h returns the first task id; nothing is sent twice.",
    )  # fmt: skip
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class ReasonIn(Strict):
    reason: str = Reason


class RevokeIn(Strict):
    reason: str = Reason
    terminate: Flag = Field(False, description="Kill a running task (its worker is signalled).")
    signal: Signal = Signal.SIGTERM


class BulkIn(Strict):
    action: BulkAction
    ids: list[str] | None = Field(None, min_length=1, max_length=10_000)
    filter: TaskFilter | None = None
    dry_run: Flag = False
    limit: BulkLimit = Field(1000, description="Refuse when more tasks match.")
    terminate: Flag = False
    reason: str = Reason


class TaskPage(BaseModel):
    items: list[TaskResult]
    next_cursor: str | None


class TaskStatusOut(RootModel[TaskStatus]):
    pass


class HistoryOut(BaseModel):
    task_id: str
    events: list[HistoryEvent]


class SubmittedOut(RootModel[Submitted]):
    pass


class RetryOut(RootModel[RetryOutcome]):
    pass


class RevokeOut(RootModel[RevokeOutcome]):
    pass


class BulkOut(RootModel[BulkOutcome]):
    pass


# -- dead letters ------------------------------------------------------------------------------


class DeadLetterFilter(Strict):
    queue: str | None = Field(None, max_length=255, description="Queue; wildcards allowed.")
    task: str | None = Field(None, max_length=255, description="Task name; wildcards allowed.")
    reason: DeadLetterReason | None = None
    exception: str | None = Field(None, max_length=255, description="Exception class.")
    text: str | None = Field(None, max_length=200)
    since: Moment | None = None
    until: Moment | None = None


class DeadLetterQuery(DeadLetterFilter):
    limit: int = Limit
    cursor: str | None = Cursor


ReplayExpires = Field(
    None,
    description="A new expiry for the replayed tasks: a time, or seconds from now. Entries "
    "whose expiry has passed are refused without it (or clear_expiry).",
)
ClearExpiry = Field(False, description="Replay the tasks without an expiry.")


class ReplayIn(Strict):
    ids: list[str] | None = Field(None, min_length=1, max_length=10_000)
    filter: DeadLetterFilter | None = None
    all: Flag = False
    to_queue: str | None = Field(None, min_length=1, max_length=255)
    rate: Number | None = Field(None, gt=0, le=100_000, description="Messages per second.")
    dry_run: Flag = False
    expires: Instant | Number | None = ReplayExpires
    clear_expiry: Flag = ClearExpiry
    reason: str = Reason


class ReplayOneIn(Strict):
    to_queue: str | None = Field(None, min_length=1, max_length=255)
    expires: Instant | Number | None = ReplayExpires
    clear_expiry: Flag = ClearExpiry
    reason: str = Reason


class PurgeIn(Strict):
    filter: DeadLetterFilter | None = None
    older_than: Number | None = Field(None, ge=0, le=LONGEST,
                                      description="Seconds since they died.")  # fmt: skip
    all: Flag = False
    dry_run: Flag = False
    reason: str = Reason


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    next_cursor: str | None


class DeadLetterOut(RootModel[DeadLetter]):
    pass


class DeadLetterStatsQuery(Strict):
    scan_limit: int | None = Field(
        None, ge=1, le=10_000_000,
        description="Count by task, reason and exception over this many newest entries only "
        "(totals, counts per queue and the oldest age stay exact); all entries when absent.",
    )  # fmt: skip


class DeadLetterStatsOut(RootModel[Stats]):
    pass


class OutcomeOut(RootModel[Outcome]):
    pass


# -- workers and queues ------------------------------------------------------------------------


class WorkersQuery(Strict):
    status: WorkerState | None = None


class WorkersOut(RootModel[list[WorkerInfo]]):
    pass


class RecoveredOut(RootModel[list[RecoveryOutcome]]):
    pass


class NamesOut(BaseModel):
    names: list[str]


class QueuesOut(RootModel[list[QueueStats]]):
    pass


class QueueOut(RootModel[QueueStats]):
    pass


class QueuePurgeIn(Strict):
    confirm: str = Field(max_length=255, description="The queue's name, typed again.")
    keep_delayed: Flag = Field(False, description="Keep the ETA/countdown tasks.")
    reason: str = Reason


class QueuePurgedOut(BaseModel):
    queue: str
    purged: int
    include_delayed: bool


class PausedOut(BaseModel):
    queue: str
    paused: bool
    changed: bool


class RemovedOut(RootModel[RemoveOutcome]):
    pass


# -- operations --------------------------------------------------------------------------------


class StatsOut(RootModel[TaskStats]):
    pass


class TimelineQuery(Strict):
    minutes: int = Field(60, ge=1, le=1440, description="How far back.")
    width_seconds: int = Field(60, ge=1, le=3600, description="The width of each interval; "
                               f"at most {MAX_INTERVALS} intervals in all.")  # fmt: skip


class TimelineOut(RootModel[Timeline]):
    pass


class AuditQueryIn(Strict):
    actor: str | None = Field(None, max_length=255)
    action: str | None = Field(None, max_length=100, description="Exact, or a prefix with `.`.")
    target: str | None = Field(None, max_length=255)
    since: Moment | None = None
    until: Moment | None = None
    limit: int = Limit
    cursor: str | None = Field(None, max_length=100)


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None


class MeOut(BaseModel):
    name: str
    role: str
    may: list[str] = Field(description="The roles this token has (each includes the lower).")


class LastEventHeader(BaseModel):
    last_event_id: str | None = Field(None, alias="Last-Event-ID", max_length=40)
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class StreamQuery(Strict):
    max_seconds: float | None = Field(None, gt=0, le=86_400,
                                      description="End the stream after this long.")  # fmt: skip


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
