"""Tasks: where one is and what happened to it, listing results, and task id prefixes.

A task's status combines what the broker holds (its message: ready, delayed, in flight and
whose, dead-lettered) with what the result store holds (its result row and its history), so a
task that was just published is found although no worker has seen it yet, and a finished one
is found although its message is gone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from ..backend import listing
from ..clock import as_utc
from .data import Page
from .dead_letter_entries import DeadLetter
from .errors import Conflict, InvalidRequest, NotFound
from .queues import MessageLocation
from .task_actions import TaskActions

if TYPE_CHECKING:
    from .api import Operations

#: fewest characters of a task id a prefix lookup accepts
MIN_PREFIX = 4
_GLOB_SPECIAL = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis MATCH pattern."""
    return text.translate(_GLOB_SPECIAL)


@dataclass
class HistoryEvent:
    at: datetime | None
    event: str
    state: str | None
    worker: str | None
    detail: dict[str, Any] | None


@dataclass
class TaskResult:
    """A task's row in the result store. ``args``, ``kwargs`` and ``result`` are the decoded
    JSON values, or ``{"opaque": true, "content_type": …, "bytes": n}`` for other encodings
    (never unpickled here)."""

    task_id: str
    state: str
    name: str | None
    args: Any
    kwargs: Any
    result: Any
    traceback: str | None
    exception_type: str | None
    exception_message: str | None
    worker: str | None
    retries: int | None
    queue: str | None
    parent_id: str | None
    root_id: str | None
    group_id: str | None
    sent_at: datetime | None
    received_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None


@dataclass
class TaskStatus:
    """Everything known about one task. ``place`` sums it up: queued, delayed, in flight,
    dead-lettered, replaying, or (no message left) the result's state."""

    task_id: str
    place: str
    broker: list[MessageLocation] = field(default_factory=list)
    dead_letter: DeadLetter | None = None
    result: TaskResult | None = None
    history: list[HistoryEvent] = field(default_factory=list)


#: which results to list (see ``backend.listing.ResultQuery``)
TaskQuery = listing.ResultQuery

_PLACES = {"ready": "queued", "delayed": "delayed", "inflight": "in flight",
           "dead": "dead-lettered", "replaying": "replaying"}  # fmt: skip


def decode_payload(raw: bytes | None, content_type: str | None) -> Any:
    if raw is None:
        return None
    if (content_type or "application/json") == "application/json":
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            pass
    return {"opaque": True, "content_type": content_type, "bytes": len(raw)}


def result_of(m: Mapping[Any, Any]) -> TaskResult:
    content_type = m.get("content_type")
    return TaskResult(
        task_id=m["task_id"],
        state=m["state"],
        name=m.get("name"),
        args=decode_payload(m.get("args"), content_type),
        kwargs=decode_payload(m.get("kwargs"), content_type),
        result=decode_payload(m.get("result"), content_type) if "result" in m else None,
        traceback=m.get("traceback"),
        exception_type=m.get("exception_type"),
        exception_message=m.get("exception_message"),
        worker=m.get("worker"),
        retries=m.get("retries"),
        queue=m.get("queue"),
        parent_id=m.get("parent_id"),
        root_id=m.get("root_id"),
        group_id=m.get("group_id"),
        sent_at=as_utc(m.get("sent_at")),
        received_at=as_utc(m.get("received_at")),
        started_at=as_utc(m.get("started_at")),
        finished_at=as_utc(m.get("finished_at")),
        updated_at=as_utc(m.get("updated_at")),
    )


def history_event(m: Mapping[Any, Any]) -> HistoryEvent:
    return HistoryEvent(as_utc(m["at"]), m["event"], m["state"], m["worker"], m["detail"])


class Tasks(TaskActions):
    """Tasks across the broker and the result store (acting on them: ``task_actions``)."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    # -- ids ----------------------------------------------------------------------------------

    def _known(self, task_id: str) -> bool:
        if self.ops.has_broker and self.ops.queues.find_messages(task_id):
            return True
        results = self.ops.results
        return results is not None and (
            results.read(task_id) is not None or bool(results.history(task_id))
        )

    def _broker_ids_starting_with(self, prefix: str, limit: int) -> set[str]:
        pattern = glob_escape(prefix) + "*"
        found: set[str] = set()
        if not self.ops.has_broker:
            return found
        for queue in self.ops.queues.names():
            for task_id in self.ops.broker.admin.task_ids_like(queue, pattern):
                found.add(task_id)
                if len(found) > limit:
                    return found
        return found

    def resolve(self, ident: str, missing_ok: bool = False) -> str:
        """The task id ``ident`` names: itself, or the one task id it is a prefix of.

        A trailing ``…`` (as ids are shortened in tables) is ignored. ``NotFound`` when no task
        has that id (unless ``missing_ok``: then ``ident`` itself, or '' for a prefix of
        none), ``Conflict`` when a prefix names several.
        """
        text = ident.strip().rstrip("…").rstrip(".")
        if not text:
            raise InvalidRequest("give a task id (or a unique prefix of one)")
        if not text.isprintable():  # no store holds such an id (and PostgreSQL refuses a NUL)
            raise NotFound(f"no task with id {text!r}")
        if self._known(text):
            return text
        if len(text) < MIN_PREFIX:
            if missing_ok:
                return ""
            raise NotFound(f"no task with id {text!r} (give at least {MIN_PREFIX} characters "
                           "of an id to look it up by prefix)")  # fmt: skip
        found = self._broker_ids_starting_with(text, 2)
        if self.ops.results is not None:
            found.update(listing.ids_starting_with(self.ops.results, text, 3))
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            shown = ", ".join(sorted(found)[:3])
            raise Conflict(f"{text!r} is the start of several task ids ({shown}, ...): give more "
                           "characters")  # fmt: skip
        if missing_ok:
            return ""
        raise NotFound(self._nobody_knows(text))

    def _nobody_knows(self, task_id: str) -> str:
        where = f"the broker ({self.ops.describe_broker()})"
        if self.ops.results is None:
            return (f"no task {task_id!r} in {where}; no result store was given, so finished "
                    "tasks cannot be found (pass -A proj or a database URL)")  # fmt: skip
        return (
            f"no task {task_id!r} in {where} or in the result store ({self.ops.describe_results()})"
        )

    # -- one task -----------------------------------------------------------------------------

    def status(self, ident: str) -> TaskStatus:
        """Where the task is now and everything that happened to it. A whole task id is
        looked up once; only an id nobody knows is tried as a prefix (``resolve``)."""
        text = ident.strip().rstrip("…").rstrip(".")
        found = self._status_of(text) if text and text.isprintable() else None
        if found is not None:
            return found
        task_id = self.resolve(ident)
        found = self._status_of(task_id) if task_id != text else None
        if found is None:
            raise NotFound(self._nobody_knows(task_id))
        return found

    def _status_of(self, task_id: str) -> TaskStatus | None:
        broker = self.ops.queues.find(task_id) if self.ops.has_broker else []
        dead = self.ops.dead_letters.find(task_id) if any(
            m.state in ("dead", "replaying") for m in broker) else None  # fmt: skip
        result, history = None, []
        results = self.ops.results
        if results is not None:
            row, rows = results.read_with_history(task_id)
            result = result_of(row) if row is not None else None
            history = [history_event(r) for r in rows]
        if not broker and result is None and not history:
            return None
        place = next((_PLACES.get(m.state, m.state) for m in broker), None)
        if place is None:
            place = result.state if result is not None else "unknown"
        return TaskStatus(task_id, place, broker, dead, result, history)

    def history(self, ident: str) -> list[HistoryEvent]:
        if self.ops.results is None:
            raise InvalidRequest("no result store was given: the history lives there "
                                 "(pass -A proj or a database URL)")  # fmt: skip
        task_id = self.resolve(ident)
        return [history_event(r._mapping) for r in self.ops.results.history(task_id)]

    # -- many ---------------------------------------------------------------------------------

    def search(
        self, query: TaskQuery | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[TaskResult]:
        """Results matching ``query``, newest first by ``query.sort`` (a page at a time)."""
        if self.ops.results is None:
            raise InvalidRequest("no result store was given: results live there "
                                 "(pass -A proj or a database URL)")  # fmt: skip
        if not 1 <= limit <= 1000:
            raise InvalidRequest(f"limit must be from 1 to 1000, got {limit}")
        try:
            rows, next_cursor = listing.search(
                self.ops.results, query or TaskQuery(), limit, cursor
            )
        except listing.InvalidCursor as exc:
            raise InvalidRequest(str(exc)) from None
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        return Page([result_of(cast(Any, r)._mapping) for r in rows], next_cursor)
