"""``/healthz`` (the process answers), ``/readyz`` (its dependencies answer) and ``/metrics``.

``/readyz`` is 503, naming what is down, while Redis or the database does not answer or the
result store's tables are not at the newest migration.
"""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIBlueprint, abort
from flask import Response, current_app, request

from ..context import backends
from . import models as m

logger = logging.getLogger(__name__)

bp = APIBlueprint("health", __name__, tag="Health")


@bp.get("/healthz")
@bp.output(m.Health)
def healthz() -> Any:
    """The process is alive (no dependency is checked)."""
    return {"status": "ok", "checks": {}}


def _down(what: str, exc: BaseException) -> str:
    """What a check says of a dependency that failed: its error's kind, nothing it said (the
    log has that: it may name addresses)."""
    logger.warning("readiness: %s is down: %s", what, exc)
    return f"down ({type(exc).__name__})"


def _checks() -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        ops = backends(current_app).ops()
    except Exception as exc:
        return {"redis": _down("redis", exc)}
    if ops.has_broker:
        try:
            ops.broker.admin.ping()
            found["redis"] = "ok"
        except Exception as exc:
            found["redis"] = _down("redis", exc)
    if ops.results is not None:
        from sqlalchemy import text

        from taskqueue_backend.backend.migrate import current, head

        store = ops.results
        try:
            with store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            found["database"] = "ok"
            prefix = store.tables.results.name.removesuffix("results")
            revision = current(store.engine, prefix, store.tables.results.schema)
            found["migrations"] = "ok" if revision == head() else (
                f"at {revision}, not {head()}: run `taskqueue db upgrade`")  # fmt: skip
        except Exception as exc:
            found.setdefault("database", _down("database", exc))
    return found


@bp.get("/readyz")
@bp.output(m.Health)
@bp.doc(responses={503: "A dependency is down (the body names it)"})
def readyz() -> Any:
    """Redis and the database answer, and the tables are at the newest migration."""
    checks = _checks()
    down = sorted(name for name, state in checks.items() if state != "ok")
    if down:
        abort(503, f"not ready: {', '.join(f'{d} {checks[d]}' for d in down)}",
              detail={"down": down, "checks": checks})  # fmt: skip
    return {"status": "ok", "checks": checks}


METRICS_DOC: Any = {200: {"description": "Prometheus text exposition",
                          "content": {"text/plain": {"schema": {"type": "string"}}}}}  # fmt: skip


@bp.get("/metrics")
@bp.doc(responses=METRICS_DOC)
def metrics() -> Response:
    """Prometheus metrics: queues, dead letters, workers, tasks from the history."""
    settings = current_app.extensions["taskqueue.settings"]
    if not settings.metrics_public:
        given = request.headers.get("Authorization", "")
        token = given.removeprefix("Bearer ").strip() if given.startswith("Bearer ") else None
        if current_app.extensions["taskqueue.tokens"].identify(token) is None:
            abort(401, "metrics need a token (TQ_METRICS_PUBLIC is off)")
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    ops = backends(current_app).ops()
    for collector in ops.collectors():
        registry.register(collector)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
