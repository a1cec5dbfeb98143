"""``/api/v1/tasks``: find, list, submit, retry and revoke tasks."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import g

from taskqueue_backend.operations import TaskQuery, parsing

from . import models as m
from .security import requires

bp = APIBlueprint("tasks", __name__, url_prefix="/api/v1", tag="Tasks")


def task_query(given: m.TaskListQuery | m.TaskFilter, sort: str = "updated",
               ascending: bool = False) -> TaskQuery:  # fmt: skip
    return parsing.task_query(given.state, given.name, given.queue, given.worker, given.since,
                              given.until, given.q, sort, ascending)  # fmt: skip


@bp.get("/tasks")
@requires("viewer")
@bp.input(m.TaskListQuery, location="query")
@bp.output(m.TaskPage)
def list_tasks(query_data: m.TaskListQuery) -> Any:
    """List results, newest first by the chosen time (cursor pagination); each item without
    its result payload (read one task for it)."""
    query = task_query(query_data, query_data.sort.value, query_data.order == m.Order.asc)
    page = g.ops.tasks.search(query, limit=query_data.limit, cursor=query_data.cursor)
    return {"items": page.items, "next_cursor": page.next_cursor}


@bp.get("/tasks/<task_id>")
@requires("viewer")
@bp.output(m.TaskStatusOut)
@bp.doc(responses=[404])
def get_task(task_id: str) -> Any:
    """Where a task is in the broker now, its result and its history (id prefixes allowed)."""
    return g.ops.tasks.status(task_id)


@bp.get("/tasks/<task_id>/events")
@requires("viewer")
@bp.output(m.HistoryOut)
@bp.doc(responses=[404])
def task_events(task_id: str) -> Any:
    """A task's history (its timeline), oldest first."""
    full = g.ops.tasks.resolve(task_id)
    return {"task_id": full, "events": g.ops.tasks.history(full)}


@bp.post("/tasks")
@requires("operator")
@bp.input(m.IdempotencyHeader, location="headers", arg_name="headers")
@bp.input(m.SubmitIn, location="json")
@bp.output(m.SubmittedOut, status_code=201)
@bp.doc(
    responses={
        200: "A repeat of an earlier request with the same Idempotency-Key",
        409: "The Idempotency-Key was used for another request",
        422: "The task is not registered, or the request cannot be sent",
    }
)
def submit_task(headers: m.IdempotencyHeader, json_data: m.SubmitIn) -> Any:
    """Publish a task by name, with arguments, queue, priority and countdown or ETA."""
    body = json_data
    sent = g.ops.tasks.submit(
        body.name, body.args, body.kwargs, queue=body.queue, priority=body.priority,
        countdown=body.countdown, eta=body.eta, idempotency_key=headers.idempotency_key,
        reason=body.reason,
    )  # fmt: skip
    return sent, 200 if sent.duplicate else 201


@bp.post("/tasks/<task_id>/retry")
@requires("operator")
@bp.input(m.ReasonIn, location="json")
@bp.output(m.RetryOut)
@bp.doc(responses=[404, 409, 422])
def retry_task(task_id: str, json_data: m.ReasonIn) -> Any:
    """Run a failed or revoked task again under the same id: from its dead letter when it has
    one (a dead-letter replay), else re-sent from its stored name, arguments and queue."""
    return g.ops.tasks.retry(task_id, reason=json_data.reason)


@bp.post("/tasks/<task_id>/revoke")
@requires("operator")
@bp.input(m.RevokeIn, location="json")
@bp.output(m.RevokeOut)
@bp.doc(responses=[404, 409])
def revoke_task(task_id: str, json_data: m.RevokeIn) -> Any:
    """Make sure a task never runs: a waiting message is deleted from the broker (REVOKED for
    good); a running one is revoked through remote control (``terminate`` kills it)."""
    return g.ops.tasks.revoke(task_id, terminate=json_data.terminate,
                              signal=json_data.signal.value, reason=json_data.reason)  # fmt: skip


@bp.post("/tasks/bulk")
@requires("operator")
@bp.input(m.BulkIn, location="json")
@bp.output(m.BulkOut)
@bp.doc(responses=[404, 422])
def bulk_tasks(json_data: m.BulkIn) -> Any:
    """Retry or revoke tasks by ids or by a filter over the results (at most ``limit``)."""
    body = json_data
    query = task_query(body.filter) if body.filter is not None else None
    return g.ops.tasks.bulk(
        body.action.value, ids=body.ids, query=query, dry_run=body.dry_run, limit=body.limit,
        terminate=body.terminate, reason=body.reason,
    )  # fmt: skip
