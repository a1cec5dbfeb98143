"""Errors on the admin UI's pages as pages: what went wrong and what to do, with the status
the API would answer (404, 409, 422, 403 naming the role needed, 400 for a missing CSRF token,
503 naming what is down); an unexpected error is logged with its request id, never shown."""

from __future__ import annotations

import logging

from apiflask import HTTPError
from flask import g, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from taskqueue_backend.operations import (
    Conflict,
    InvalidRequest,
    NotFound,
    OperationError,
    unavailable,
)

from .blueprint import bp

logger = logging.getLogger(__name__)

STATUS_TITLES = {400: "Bad request", 401: "Sign in again", 403: "Not allowed",
                 404: "Not found", 405: "Not allowed here", 409: "Conflict",
                 413: "Too large", 422: "Cannot do that", 429: "Too many at once",
                 500: "Something went wrong", 503: "A dependency is down"}  # fmt: skip


def error_page(status: int, message: str) -> tuple[str, int]:
    """An error as a page of the UI (the API answers JSON instead)."""
    g.error_message = message
    return render_template("ui/error.html", status=status, message=message,
                           title=STATUS_TITLES.get(status, "Error")), status  # fmt: skip


@bp.errorhandler(CSRFError)
def csrf_refused(exc: CSRFError) -> tuple[str, int]:
    return error_page(400, "This form's security token is missing or no longer valid. "
                           "Go back, reload the page and try again.")  # fmt: skip


@bp.errorhandler(NotFound)
def not_found(exc: NotFound) -> tuple[str, int]:
    return error_page(404, str(exc))


@bp.errorhandler(InvalidRequest)
def invalid(exc: InvalidRequest) -> tuple[str, int]:
    return error_page(422, str(exc))


@bp.errorhandler(Conflict)
def conflict(exc: Conflict) -> tuple[str, int]:
    return error_page(409, str(exc))


@bp.errorhandler(OperationError)
def other(exc: OperationError) -> tuple[str, int]:  # pragma: no cover - subclasses above
    return error_page(422, str(exc))


@bp.errorhandler(HTTPException)
def http(exc: HTTPException) -> tuple[str, int]:
    return error_page(exc.code or 500, exc.description or exc.name)


@bp.errorhandler(HTTPError)
def refused(exc: HTTPError) -> tuple[str, int, dict]:
    """A refusal raised by code the API shares (e.g. a full set of event streams)."""
    page, status = error_page(exc.status_code, exc.message or "error")
    return page, status, dict(exc.headers or {})


@bp.errorhandler(Exception)
def unexpected(exc: Exception) -> tuple[str, int]:
    down = unavailable(exc)
    if down is not None:
        logger.warning("page %s %s: %s", request.method, request.path, exc)
        return error_page(503, f"{down.dependency} is unreachable; see the server's log.")
    request_id = g.get("request_id", "-")
    logger.exception("page %s %s failed (request id %s)", request.method, request.path,
                     request_id)  # fmt: skip
    return error_page(500, f"Internal error (request id {request_id}); see the server's log.")
