"""``/api/v1/workers``: list, show, recover, forget and shut down workers."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import g

from . import models as m
from .security import requires

bp = APIBlueprint("workers", __name__, url_prefix="/api/v1", tag="Workers")


@bp.get("/workers")
@requires("viewer")
@bp.input(m.WorkersQuery, location="query")
@bp.output(m.WorkersOut)
def list_workers(query_data: m.WorkersQuery) -> Any:
    """Worker processes: online, stale (missed its window) or offline (gone)."""
    return m.WorkersOut(g.ops.workers.all(query_data.status.value if query_data.status else None))


@bp.get("/workers/<name>")
@requires("viewer")
@bp.output(m.WorkersOut)
@bp.doc(responses=[404])
def get_worker(name: str) -> Any:
    """The worker processes of a node name (or one consumer id)."""
    return m.WorkersOut(g.ops.workers.get(name))


@bp.post("/workers/<name>/recover")
@requires("operator")
@bp.input(m.ReasonIn, location="json")
@bp.output(m.RecoveredOut)
@bp.doc(responses=[404, 409])
def recover_worker(name: str, json_data: m.ReasonIn) -> Any:
    """Return a stale worker's messages to their queues now."""
    return m.RecoveredOut(g.ops.workers.recover(name, reason=json_data.reason))


@bp.delete("/workers/<name>")
@requires("admin")
@bp.input(m.ReasonIn, location="query")
@bp.output(m.NamesOut)
@bp.doc(responses=[404, 409])
def forget_worker(name: str, query_data: m.ReasonIn) -> Any:
    """Forget an offline worker: gone from every view and metric."""
    return {"names": g.ops.workers.forget(name, reason=query_data.reason)}


@bp.post("/workers/<name>/shutdown")
@requires("admin")
@bp.input(m.ReasonIn, location="json")
@bp.output(m.NamesOut)
@bp.doc(responses=[404, 409])
def shutdown_worker(name: str, json_data: m.ReasonIn) -> Any:
    """Ask a live worker to shut down warmly (remote control)."""
    return {"names": g.ops.workers.shutdown(name, reason=json_data.reason)}
