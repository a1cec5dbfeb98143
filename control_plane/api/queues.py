"""``/api/v1/queues``: counts, purge, pause and resume."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, abort
from flask import g

from . import models as m
from .security import requires

bp = APIBlueprint("queues", __name__, url_prefix="/api/v1", tag="Queues")


@bp.get("/queues")
@requires("viewer")
@bp.output(m.QueuesOut)
def list_queues() -> Any:
    """Every queue: ready by priority, delayed, in flight, dead letters, oldest age, consumers,
    paused."""
    return m.QueuesOut(g.ops.queues.all())


@bp.get("/queues/<name>")
@requires("viewer")
@bp.output(m.QueueOut)
@bp.doc(responses=[404])
def get_queue(name: str) -> Any:
    """One queue's counts."""
    return g.ops.queues.stats(name)


@bp.post("/queues/<name>/purge")
@requires("admin")
@bp.input(m.QueuePurgeIn, location="json")
@bp.output(m.QueuePurgedOut)
@bp.doc(responses=[404])
def purge_queue(name: str, json_data: m.QueuePurgeIn) -> Any:
    """Delete a queue's waiting messages (ready, and delayed unless ``keep_delayed``). The
    ``confirm`` field must repeat the queue's name."""
    if json_data.confirm != name:
        abort(422, "confirm must be the queue's name", detail={"json": {"confirm": [
            f"type {name!r} to purge this queue"]}})  # fmt: skip
    gone = g.ops.queues.purge(name, include_delayed=not json_data.keep_delayed,
                              reason=json_data.reason)  # fmt: skip
    return {"queue": name, "purged": gone, "include_delayed": not json_data.keep_delayed}


@bp.post("/queues/<name>/pause")
@requires("operator")
@bp.input(m.ReasonIn, location="json")
@bp.output(m.PausedOut)
@bp.doc(responses=[404])
def pause_queue(name: str, json_data: m.ReasonIn) -> Any:
    """Stop every consumer from leasing from the queue (durable); publishing still works."""
    changed = g.ops.queues.pause(name, reason=json_data.reason)
    return {"queue": name, "paused": True, "changed": changed}


@bp.post("/queues/<name>/resume")
@requires("operator")
@bp.input(m.ReasonIn, location="json")
@bp.output(m.PausedOut)
@bp.doc(responses=[404])
def resume_queue(name: str, json_data: m.ReasonIn) -> Any:
    """Let consumers lease from the queue again."""
    changed = g.ops.queues.resume(name, reason=json_data.reason)
    return {"queue": name, "paused": False, "changed": changed}
