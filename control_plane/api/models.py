"""The request and response models of ``/api/v1``: they validate requests and are the OpenAPI
document (APIFlask generates it from them).

Responses are the operations layer's own data objects (dataclasses), wrapped for pydantic, so
the API's JSON is the same shape as the CLI's ``--json``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

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
from taskqueue_backend.operations.stats import TaskStats, Timeline
from taskqueue_backend.operations.task_actions import (
    BulkOutcome,
    RetryOutcome,
    RevokeOutcome,
    Submitted,
)

Reason = Field(default="", max_length=500, description="Why (kept in the audit log and history).")
Limit = Field(default=50, ge=1, le=1000, description="At most this many items.")
Cursor = Field(default=None, max_length=500, description="The `next_cursor` of the last page.")


# A list response is returned as its model (``WorkersOut(found)``): APIFlask would validate
# each item of a bare list against the list model.


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- tasks -------------------------------------------------------------------------------------


class Sort(StrEnum):
    updated = "updated"
    received = "received"
    finished = "finished"


class Order(StrEnum):
    desc = "desc"
    asc = "asc"


class TaskListQuery(Strict):
    state: str | None = Field(None, max_length=200, description="States, comma-separated.")
    name: str | None = Field(None, max_length=255, description="Task name; `*` wildcards.")
    queue: str | None = Field(None, max_length=255)
    worker: str | None = Field(None, max_length=255)
    since: datetime | None = Field(None, description="At or after (by `sort`).")
    until: datetime | None = Field(None, description="At or before (by `sort`).")
    q: str | None = Field(None, max_length=200, description="Text in args, kwargs, exception.")
    sort: Sort = Sort.updated
    order: Order = Order.desc
    limit: int = Limit
    cursor: str | None = Cursor


class TaskFilter(Strict):
    state: list[str] | None = Field(None, max_length=20)
    name: str | None = Field(None, max_length=255)
    queue: str | None = Field(None, max_length=255)
    worker: str | None = Field(None, max_length=255)
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = Field(None, max_length=200)


class SubmitIn(Strict):
    name: str = Field(min_length=1, max_length=255, description="The task's registered name.")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(None, min_length=1, max_length=255)
    priority: int | None = Field(None, ge=0, le=255)
    countdown: float | None = Field(None, ge=0, le=366 * 24 * 3600)
    eta: datetime | None = None
    reason: str = Reason


class IdempotencyHeader(BaseModel):
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=255, alias="Idempotency-Key",
        description="The same key within 24 h returns the first task id; nothing is sent twice.",
    )  # fmt: skip
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class ReasonIn(Strict):
    reason: str = Reason


class Signal(StrEnum):
    SIGTERM = "SIGTERM"
    SIGKILL = "SIGKILL"
    SIGINT = "SIGINT"
    SIGQUIT = "SIGQUIT"
    SIGUSR1 = "SIGUSR1"


class RevokeIn(Strict):
    reason: str = Reason
    terminate: bool = Field(False, description="Kill a running task (its worker is signalled).")
    signal: Signal = Signal.SIGTERM


class BulkAction(StrEnum):
    retry = "retry"
    revoke = "revoke"


class BulkIn(Strict):
    action: BulkAction
    ids: list[str] | None = Field(None, min_length=1, max_length=10_000)
    filter: TaskFilter | None = None
    dry_run: bool = False
    limit: int = Field(1000, ge=1, le=10_000, description="Refuse when more tasks match.")
    terminate: bool = False
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


class DeadLetterReason(StrEnum):
    failed = "failed"
    rejected = "rejected"
    poison = "poison"
    malformed = "malformed"
    undecodable = "undecodable"
    unknown_task = "unknown_task"
    invalid_message = "invalid_message"
    expired = "expired"
    result_store_unavailable = "result_store_unavailable"


class DeadLetterFilter(Strict):
    queue: str | None = Field(None, max_length=255, description="Queue; wildcards allowed.")
    task: str | None = Field(None, max_length=255, description="Task name; wildcards allowed.")
    reason: DeadLetterReason | None = None
    exception: str | None = Field(None, max_length=255, description="Exception class.")
    text: str | None = Field(None, max_length=200)
    since: datetime | None = None
    until: datetime | None = None


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
    all: bool = False
    to_queue: str | None = Field(None, min_length=1, max_length=255)
    rate: float | None = Field(None, gt=0, le=100_000, description="Messages per second.")
    dry_run: bool = False
    expires: datetime | float | None = ReplayExpires
    clear_expiry: bool = ClearExpiry
    reason: str = Reason


class ReplayOneIn(Strict):
    to_queue: str | None = Field(None, min_length=1, max_length=255)
    expires: datetime | float | None = ReplayExpires
    clear_expiry: bool = ClearExpiry
    reason: str = Reason


class PurgeIn(Strict):
    filter: DeadLetterFilter | None = None
    older_than: float | None = Field(None, ge=0, description="Seconds since they died.")
    all: bool = False
    dry_run: bool = False
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


class WorkerState(StrEnum):
    online = "online"
    stale = "stale"
    offline = "offline"


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
    keep_delayed: bool = Field(False, description="Keep the ETA/countdown tasks.")
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
    width_seconds: int = Field(60, ge=1, le=3600, description="The width of each interval.")


class TimelineOut(RootModel[Timeline]):
    pass


class AuditQueryIn(Strict):
    actor: str | None = Field(None, max_length=255)
    action: str | None = Field(None, max_length=100, description="Exact, or a prefix with `.`.")
    target: str | None = Field(None, max_length=255)
    since: datetime | None = None
    until: datetime | None = None
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
