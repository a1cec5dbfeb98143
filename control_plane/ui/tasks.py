"""Task pages: ``/tasks`` (results filtered by state, name, queue, worker, time and text, a
cursor page at a time, the filters in the URL) and ``/tasks/<id>`` (where its message is in
the broker and what state the result store recorded, said apart; its arguments, result or
traceback, its dead letter and its whole history, with retry and revoke)."""

from __future__ import annotations

from typing import Any

from flask import g, redirect, render_template, request, url_for

from taskqueue_backend.operations import Conflict, InvalidRequest, NotFound
from taskqueue_backend.operations.task_actions import SIGNALS
from taskqueue_backend.vocabulary import TaskState, values

from ..api import models as m
from ..api.tasks import task_query
from . import forms
from .blueprint import bp
from .session import page

STATES = values(TaskState)
FINISHED = ("SUCCESS", "FAILURE", "REVOKED", "REJECTED")


@bp.get("/tasks")
@page("viewer")
def tasks() -> Any:
    given, errors = forms.query(m.TaskListQuery)
    found = None
    if g.ops.results is not None:
        query = task_query(given, given.sort.value, given.order == m.Order.asc)
        try:
            found = g.ops.tasks.search(query, limit=given.limit, cursor=given.cursor)
        except InvalidRequest as exc:
            errors["cursor" if given.cursor else "query"] = str(exc)
    next_url = None
    if found is not None and found.next_cursor:
        next_url = url_for("ui.tasks", **forms.args_without("cursor"), cursor=found.next_cursor)
    first_url = url_for("ui.tasks", **forms.args_without("cursor")) if given.cursor else None
    return render_template(
        "ui/tasks.html", section="tasks", page=found, given=given, errors=errors,
        states=STATES, next_url=next_url, first_url=first_url,
        chosen_state=",".join(s.value for s in given.state or ()),  # several: from a link
    ), 400 if errors else 200  # fmt: skip


@bp.get("/tasks/<task_id>")
@page("viewer")
def task(task_id: str) -> Any:
    status = g.ops.tasks.status(task_id)
    if status.task_id != task_id:  # a prefix: show the task at its own address
        return redirect(url_for("ui.task", task_id=status.task_id))
    state = status.result.state if status.result is not None else None
    return render_template(
        "ui/task.html", section="tasks", status=status, signals=SIGNALS,
        has_broker=g.ops.has_broker, has_results=g.ops.results is not None,
        may_retry=status.dead_letter is not None or state in ("FAILURE", "REVOKED", "REJECTED"),
        may_revoke=state not in FINISHED and status.place != "dead-lettered",
    )  # fmt: skip


@bp.post("/tasks/<task_id>/retry")
@page("operator")
def retry_task(task_id: str) -> Any:
    here = url_for("ui.task", task_id=task_id)
    try:
        outcome = g.ops.tasks.retry(task_id, reason=forms.reason())
    except (Conflict, InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here)
    source = "its dead letter" if outcome.source == "dead_letter" else "its stored request"
    return forms.done(f"Task sent again from {source} to queue {outcome.queue or '(default)'}; "
                      "its history continues below.", here)  # fmt: skip


@bp.post("/tasks/<task_id>/revoke")
@page("operator")
def revoke_task(task_id: str) -> Any:
    here = url_for("ui.task", task_id=task_id)
    terminate = request.form.get("terminate") == "1"
    signal = request.form.get("signal") or "SIGTERM"
    title = f"Revoke task {task_id}"
    running = f" and killed with {signal}." if terminate else "; it is not interrupted."
    message = ("A waiting message is deleted from the broker and the task is recorded as "
               f"REVOKED: it can never run. A running task is revoked through remote control"
               f"{running}")  # fmt: skip
    page = forms.unconfirmed(title, message, button="Revoke", count=1)
    if page is not None:
        return page
    try:
        outcome = g.ops.tasks.revoke(task_id, terminate=terminate, signal=signal,
                                     reason=forms.reason())  # fmt: skip
    except (Conflict, InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here)
    what = ("its waiting message was deleted" if outcome.removed else
            "its worker was told through remote control" if outcome.signalled else
            "nothing was waiting or running")  # fmt: skip
    return forms.done(f"Task revoked: {what}.", here)
