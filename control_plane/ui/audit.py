"""The audit log page (``/audit``): who did what to which task, queue, dead letter or worker,
and why — every change made through the API, the UI and the CLI, and every refused one —
filtered by actor, action, target and time, newest first."""

from __future__ import annotations

from typing import Any

from flask import g, render_template, url_for

from taskqueue_backend.operations import AuditQuery, InvalidRequest

from ..api import models as m
from . import forms
from .blueprint import bp
from .session import page


@bp.get("/audit")
@page("viewer")
def audit() -> Any:
    given, errors = forms.query(m.AuditQueryIn)
    criteria = AuditQuery(given.actor, given.action, given.target, given.since, given.until)
    try:
        found = g.ops.audit.entries(criteria, limit=given.limit, cursor=given.cursor)
    except InvalidRequest as exc:
        errors["cursor" if given.cursor else "query"] = str(exc)
        found = None
    next_url = None
    if found is not None and found.next_cursor:
        next_url = url_for("ui.audit", **forms.args_without("cursor"), cursor=found.next_cursor)
    first_url = url_for("ui.audit", **forms.args_without("cursor")) if given.cursor else None
    return render_template("ui/audit.html", section="audit", page=found, given=given,
                           errors=errors, next_url=next_url,
                           first_url=first_url), 400 if errors else 200  # fmt: skip
