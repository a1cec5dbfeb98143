"""``/api/v1``: statistics, the audit log, who am I, and the live stream of changes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from apiflask import APIBlueprint
from flask import Response, current_app, g

from taskqueue_backend.operations import AuditQuery, to_json

from . import models as m
from .security import bearer, requires

bp = APIBlueprint("operations", __name__, url_prefix="/api/v1", tag="Operations")


@bp.get("/stats")
@bp.auth_required(bearer)
@requires("viewer")
@bp.output(m.StatsOut)
def stats() -> Any:
    """Results by state (last hour), throughput over 1/5/15/60 minutes, retry and dead-letter
    rates, runtime and queue-wait percentiles — from the history, through its indexes."""
    return g.ops.stats()


@bp.get("/audit")
@bp.auth_required(bearer)
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
@bp.auth_required(bearer)
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
    }
}


def _event(kind: str, data: dict[str, Any], event_id: str | None) -> str:
    lines = [f"event: {kind}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(to_json(data), separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


@bp.get("/stream")
@bp.auth_required(bearer)
@requires("viewer")
@bp.input(m.LastEventHeader, location="headers", arg_name="headers")
@bp.input(m.StreamQuery, location="query")
@bp.doc(responses=STREAM_DOC)
def stream(headers: m.LastEventHeader, query_data: m.StreamQuery) -> Response:
    """Live changes as server-sent events, resumable with ``Last-Event-ID``."""
    given = headers.last_event_id
    after = int(given) if given and given.isdigit() else None
    feed = g.ops.feed(after)
    settings = current_app.extensions["taskqueue.settings"]
    until = time.monotonic() + query_data.max_seconds if query_data.max_seconds else None

    def events() -> Iterator[str]:
        yield "retry: 2000\n\n"
        beat = time.monotonic()
        while until is None or time.monotonic() < until:
            for change in feed.poll():
                yield _event(change.kind, change.data, change.id)
            if time.monotonic() - beat >= settings.stream_heartbeat:
                beat = time.monotonic()
                yield ": heartbeat\n\n"
            feed.wait(min(settings.stream_poll, settings.stream_heartbeat))

    return Response(events(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
