"""The workers page (``/workers``): every worker process online, stale (silent past its
heartbeat window) or offline, with seconds since its last heartbeat, queues, active tasks and
counts; recover a stale one (operators), shut down a live one or forget an offline one
(admins, after a confirmation)."""

from __future__ import annotations

from typing import Any

from flask import g, render_template, url_for

from taskqueue_backend.operations import Conflict, InvalidRequest, NotFound
from taskqueue_backend.vocabulary import WorkerState, values

from ..api import models as m
from . import forms
from .blueprint import bp
from .session import page

STATUSES = values(WorkerState)


@bp.get("/workers")
@page("viewer")
def workers() -> Any:
    given, errors = forms.query(m.WorkersQuery)
    status = given.status.value if given.status else None
    return render_template("ui/workers.html", section="workers", status=status,
                           statuses=STATUSES, workers=g.ops.workers.all(status),
                           errors=errors), 400 if errors else 200  # fmt: skip


@bp.post("/workers/<name>/recover")
@page("operator")
def recover_worker(name: str) -> Any:
    here = forms.back("ui.workers")
    try:
        outcomes = g.ops.workers.recover(name, reason=forms.reason())
    except (Conflict, InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here)
    returned = sum(len(o.returned) for o in outcomes)
    dead = sum(len(o.dead_lettered) for o in outcomes)
    return forms.done(f"Recovered {name}: {returned:,} message(s) back on their queues, "
                      f"{dead:,} dead-lettered (past the poison limit).", here)  # fmt: skip


@bp.post("/workers/<name>/shutdown")
@page("admin")
def shutdown_worker(name: str) -> Any:
    here = forms.back("ui.workers")
    title = f"Shut down {name}"
    message = ("Asks the worker to shut down warmly through remote control: its running tasks "
               "finish, its prefetched messages go back to their queues. Whatever supervises "
               "it may start it again.")  # fmt: skip
    page = forms.unconfirmed(title, message, button="Shut down")
    if page is not None:
        return page
    try:
        names = g.ops.workers.shutdown(name, reason=forms.reason())
    except (Conflict, InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here)
    return forms.done(f"Asked {', '.join(names)} to shut down.", here)


@bp.post("/workers/<name>/forget")
@page("admin")
def forget_worker(name: str) -> Any:
    here = forms.back("ui.workers")
    title = f"Forget {name}"
    message = "Removes the offline worker from every view and metric. Its history stays."
    page = forms.unconfirmed(title, message, button="Forget")
    if page is not None:
        return page
    try:
        names = g.ops.workers.forget(name, reason=forms.reason())
    except (Conflict, InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here)
    return forms.done(f"Forgot {', '.join(names)}.", url_for("ui.workers"))
