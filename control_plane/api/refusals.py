"""Refused changes are audited too: a mutating call that ends in an error (bad input, a role
too low, a conflict, a dependency down) writes one audit entry — who tried what, on which
path, and why it was refused — so the audit log answers "who tried to purge that queue?" as
well as "who purged it?". An operation that succeeds records its own entry (``outcome``
``done``); a call without a valid token (401) has no actor and is not recorded."""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIFlask
from flask import Response, g, request

from .security import bearer

logger = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ACTION = "request.refused"


def _caller() -> Any:
    principal = getattr(g, "principal", None)
    if principal is not None:
        return principal
    try:
        return bearer.current_user
    except Exception:  # outside an authenticated request
        return None


def _error(response: Response) -> dict[str, Any]:
    found = response.get_json(silent=True) if response.is_json else None
    error = found.get("error") if isinstance(found, dict) else None
    return error if isinstance(error, dict) else {}


def install(app: APIFlask) -> None:
    @app.after_request
    def audit_refusal(response: Response) -> Response:
        if request.method not in MUTATING or response.status_code < 400 or \
                not request.path.startswith("/api/"):  # fmt: skip
            return response
        principal = _caller()
        if principal is None:
            return response
        error = _error(response)
        given = request.get_json(silent=True) if request.is_json else None
        reason = given.get("reason") if isinstance(given, dict) else None
        from ..app import backends

        try:
            backends(app).ops().audit.record(
                principal.name, ACTION, request.path[:500],
                reason if isinstance(reason, str) else "",
                outcome="refused", role=principal.role, request_id=g.get("request_id"),
                method=request.method, endpoint=request.endpoint, status=response.status_code,
                code=error.get("code"), message=str(error.get("message", ""))[:500],
            )  # fmt: skip
        except Exception as exc:  # the broker may be the very thing that is down
            logger.warning("could not audit the refused %s %s: %s", request.method,
                           request.path, exc)  # fmt: skip
        return response
