"""The queues page (``/queues``): ready messages by priority, delayed, in flight, dead letters,
oldest age and consumers of every queue; pause and resume (operators), purge (admins, after
typing the queue's name)."""

from __future__ import annotations

from typing import Any

from flask import g, render_template, request, url_for

from taskqueue_backend.operations import Conflict, InvalidRequest, NotFound

from . import forms
from .blueprint import bp
from .session import page


@bp.get("/queues")
@page("viewer")
def queues() -> str:
    return render_template("ui/queues.html", section="queues", queues=g.ops.queues.all())


@bp.post("/queues/<name>/pause")
@page("operator")
def pause_queue(name: str) -> Any:
    here = url_for("ui.queues")
    try:
        changed = g.ops.queues.pause(name, reason=forms.reason())
    except (InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here)
    return forms.done(f"Queue {name} paused: no worker takes its messages until it is resumed."
                      if changed else f"Queue {name} was paused already.", here)  # fmt: skip


@bp.post("/queues/<name>/resume")
@page("operator")
def resume_queue(name: str) -> Any:
    here = url_for("ui.queues")
    try:
        changed = g.ops.queues.resume(name, reason=forms.reason())
    except (InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here)
    return forms.done(f"Queue {name} resumed." if changed else f"Queue {name} was not paused.",
                      here)  # fmt: skip


@bp.post("/queues/<name>/purge")
@page("admin")
def purge_queue(name: str) -> Any:
    here = url_for("ui.queues")
    keep_delayed = request.form.get("keep_delayed") == "1"
    try:
        gone = g.ops.queues.purge(name, include_delayed=not keep_delayed, dry_run=True)
    except (InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here, 404)
    title = f"Purge queue {name}"
    which = "ready ones only" if keep_delayed else "ready and delayed"
    message = (f"Deletes the waiting messages ({which}) for good. Messages in flight stay with "
               "their workers; dead letters stay.")  # fmt: skip
    page = forms.unconfirmed(title, message, button="Purge", count=gone, typed=name)
    if page is not None:
        return page
    try:
        purged = g.ops.queues.purge(name, include_delayed=not keep_delayed,
                                    reason=forms.reason())  # fmt: skip
    except (Conflict, InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here)
    return forms.done(f"Queue {name} purged: {purged:,} messages deleted.", here)
