"""Refused changes are audited too: a mutating call of the API or the admin UI that ends in an
error (a role too low, a missing CSRF token, a conflict, an operation refusing its arguments, a
dependency down) writes one audit entry — who tried what, on which path, and why it was
refused — so the audit log answers "who tried to purge that queue?" as well as "who purged
it?". An operation that succeeds records its own entry (``outcome`` ``done``); a call from
nobody known (no valid token, no session) has no actor and is not recorded, and neither is a
request that could not be read (malformed JSON, a field that does not validate: a typo,
answered with what was wrong)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, request

logger = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ACTION = "request.refused"


def _caller() -> Any:
    principal = g.get("principal")
    if principal is not None:
        return principal
    from .api.security import bearer

    try:
        return bearer.current_user
    except Exception:  # outside an authenticated request
        return None


def _refusal(response: Response) -> tuple[int, str, str] | None:
    """(status, code, message) when this response refused a change; not for a request the
    API could not even read (malformed JSON, a field that does not validate): those are
    typos, answered with what was wrong, and would fill the audit log."""
    marked = g.get("refused")  # an action of the UI refused by the operation (then redirected)
    if marked is not None:
        return marked[0], "refused", marked[1]
    if response.status_code < 400 or g.get("input_error"):
        return None
    found = response.get_json(silent=True) if response.is_json else None
    error = found.get("error") if isinstance(found, dict) else None
    error = error if isinstance(error, dict) else {}
    message = error.get("message") or g.get("error_message") or ""
    return response.status_code, str(error.get("code") or "error"), str(message)


def _reason() -> str:
    given = request.get_json(silent=True) if request.is_json else request.form
    found = given.get("reason") if given is not None and hasattr(given, "get") else None
    return found[:500] if isinstance(found, str) else ""


def install(app: Flask) -> None:
    @app.after_request
    def audit_refusal(response: Response) -> Response:
        if request.method not in MUTATING:
            return response
        if not (request.path.startswith("/api/") or request.blueprint == "ui"):
            return response
        refusal = _refusal(response)
        principal = _caller() if refusal is not None else None
        if refusal is None or principal is None:
            return response
        status, code, message = refusal
        from .context import backends

        try:
            backends(app).ops().audit.record(
                principal.name, ACTION, request.path[:500], _reason(),
                outcome="refused", role=principal.role, request_id=g.get("request_id"),
                method=request.method, endpoint=request.endpoint, status=status,
                code=code, message=message[:500],
            )  # fmt: skip
        except Exception as exc:  # the broker may be the very thing that is down
            logger.warning("could not audit the refused %s %s: %s", request.method,
                           request.path, exc)  # fmt: skip
        return response
