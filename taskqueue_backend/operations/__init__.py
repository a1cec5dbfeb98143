"""The shared operations: one implementation of everything the CLI, the REST API and the
admin UI do — task status and listings, queues (stats, remove, purge), dead letters (list,
stats, replay, delete, purge), workers (list, recover, forget), the audit log and metrics.

Nothing here imports Flask; it reads and changes the broker through this package's transport
and the result store through its backend's store. See :class:`Operations`.
"""

from . import parsing
from .api import Operations
from .audit import AuditEntry, AuditQuery
from .data import Page, to_json
from .dead_letter_entries import REASONS, DeadLetter, Filter, Outcome, Stats
from .errors import Conflict, InvalidRequest, NotFound, OperationError, Unavailable, unavailable
from .queues import MessageLocation, QueueStats, RemoveOutcome
from .tasks import HistoryEvent, TaskQuery, TaskResult, TaskStatus
from .workers import RecoveryOutcome, WorkerInfo

__all__ = [
    "REASONS", "AuditEntry", "AuditQuery", "Conflict", "DeadLetter", "Filter", "HistoryEvent",
    "InvalidRequest", "MessageLocation", "NotFound", "OperationError", "Operations", "Outcome",
    "Page", "QueueStats", "RecoveryOutcome", "RemoveOutcome", "Stats", "TaskQuery", "TaskResult",
    "TaskStatus", "Unavailable", "WorkerInfo", "parsing", "to_json", "unavailable",
]  # fmt: skip
