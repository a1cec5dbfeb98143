"""``/api/v1``: statistics, the audit log, who am I, and the live stream of changes."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import Response, current_app, g

from taskqueue_backend.operations import AuditQuery

from ..streaming import resume_position, stream_response
from . import models as m
from .security import requires

bp = APIBlueprint("operations", __name__, url_prefix="/api/v1", tag="Operations")


@bp.get("/stats")
@requires("viewer")
@bp.output(m.StatsOut)
def stats() -> Any:
    """Results by state (last hour), throughput over 1/5/15/60 minutes, retry and dead-letter
    rates, runtime and queue-wait percentiles — from the history, through its indexes."""
    return g.ops.stats()


@bp.get("/stats/timeline")
@requires("viewer")
@bp.input(m.TimelineQuery, location="query")
@bp.output(m.TimelineOut)
def timeline(query_data: m.TimelineQuery) -> Any:
    """Received, succeeded, failed, retried and dead-lettered tasks per interval over the last
    ``minutes`` (``series[event][i]`` counts ``[start + i*width, start + (i+1)*width)``)."""
    return g.ops.timeline(query_data.minutes, query_data.width_seconds)


@bp.get("/audit")
@requires("viewer")
@bp.input(m.AuditQueryIn, location="query")
@bp.output(m.AuditPage)
def audit(query_data: m.AuditQueryIn) -> Any:
    """Who did what, newest first: every mutating call of the API, the CLI and the UI."""
    q = query_data
    page = g.ops.audit.entries(AuditQuery(q.actor, q.action, q.target, q.since, q.until),
                               limit=q.limit, cursor=q.cursor)  # fmt: skip
    return {"items": page.items, "next_cursor": page.next_cursor}


@bp.get("/me")
@requires("viewer")
@bp.output(m.MeOut)
def me() -> Any:
    """The caller's name and role, and the roles that includes."""
    return {"name": g.principal.name, "role": g.principal.role, "may": g.principal.allowed}


STREAM_DOC: Any = {
    200: {
        "description": "Server-sent events: `task` (a history row; its id is the position to "
        "resume from with `Last-Event-ID`), `worker` (a status change) and `dlq` (a dead-letter "
        "count change), with a `: heartbeat` comment every TQ_STREAM_HEARTBEAT seconds",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    429: "This caller (TQ_STREAM_LIMIT_PER_CALLER) or this server process (TQ_STREAM_LIMIT) "
    "holds its most open streams; `Retry-After` says when to try again",
}


@bp.get("/stream")
@requires("viewer")
@bp.input(m.LastEventHeader, location="headers", arg_name="headers")
@bp.input(m.StreamQuery, location="query")
@bp.doc(responses=STREAM_DOC)
def stream(headers: m.LastEventHeader, query_data: m.StreamQuery) -> Response:
    """Live changes as server-sent events, resumable with ``Last-Event-ID``."""
    settings = current_app.extensions["taskqueue.settings"]
    return stream_response(g.ops, resume_position(headers.last_event_id), settings,
                           g.principal.name, query_data.max_seconds)  # fmt: skip
