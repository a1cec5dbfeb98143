"""Every error of the API as JSON: ``{"error": {"code", "message", "details"}}`` with the right
status (a browser asking for an address outside the API gets the admin UI's error page).

Validation errors are 400 and name the bad fields; operations errors map to 404 (not found),
422 (a well-formed request the operation cannot honour), 409 (conflict); a dependency that
is down is 503 naming it. Nothing else escapes: an unexpected exception is logged with the
request id and answered with a 500 that carries no stack trace, never an HTML page.
"""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIFlask, HTTPError
from apiflask.exceptions import _ValidationError
from flask import g, request
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

from taskqueue_backend.operations import (
    Conflict,
    InvalidRequest,
    NotFound,
    OperationError,
    Unavailable,
    unavailable,
)

logger = logging.getLogger(__name__)

CODES = {400: "invalid_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "body_too_large",
         415: "unsupported_media_type", 422: "unprocessable", 429: "too_many_requests",
         500: "internal_error", 503: "unavailable"}  # fmt: skip

#: the OpenAPI schema of every error body
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}


def body(status: int, message: str, details: Any = None, code: str | None = None) -> dict:
    return {"error": {"code": code or CODES.get(status, "error"), "message": message,
                      "details": details}}  # fmt: skip


def install(app: APIFlask) -> None:
    @app.error_processor
    def as_json(error: HTTPError) -> tuple[dict, int, Any]:
        details = error.detail or None
        message = error.message
        if isinstance(error, _ValidationError):
            g.input_error = True  # a request that does not validate: not worth an audit entry
        if error.status_code == 400 and isinstance(details, dict):
            fields = sorted(f"{loc}.{name}" for loc, found in details.items()
                            if isinstance(found, dict) for name in found)  # fmt: skip
            if fields:
                message = f"invalid request: {', '.join(fields)}"
        return (
            body(error.status_code, message or "error", details),
            error.status_code,
            error.headers,
        )

    @app.errorhandler(NotFound)
    def not_found(exc: NotFound) -> tuple[dict, int]:
        return body(404, str(exc)), 404

    @app.errorhandler(InvalidRequest)
    def invalid(exc: InvalidRequest) -> tuple[dict, int]:
        return body(422, str(exc)), 422

    @app.errorhandler(Conflict)
    def conflict(exc: Conflict) -> tuple[dict, int]:
        return body(409, str(exc)), 409

    @app.errorhandler(OperationError)
    def other(exc: OperationError) -> tuple[dict, int]:  # pragma: no cover - subclasses above
        return body(422, str(exc)), 422

    @app.errorhandler(DataError)
    def refused_input(exc: DataError) -> tuple[dict, int]:
        said = str(exc.orig or exc).splitlines()[0]
        logger.warning("the result store refused the input of %s %s: %s", request.method,
                       request.path, said)  # fmt: skip
        return body(
            400,
            "the result store refused a value of this request (check the filters and ids it gives)",
        ), 400

    @app.errorhandler(Unavailable)
    def down(exc: Unavailable) -> tuple[dict, int]:
        return outage(exc)

    @app.errorhandler(HTTPException)
    def http(exc: HTTPException) -> Any:
        status = exc.code or 500
        page = app.extensions.get("taskqueue.error_page")
        if page is not None and _wants_page():  # an address outside the API, from a browser
            return page(status, exc.description or exc.name or "error")
        return body(status, exc.description or exc.name or "error"), status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[dict, int]:
        found = unavailable(exc)
        if found is not None:
            logger.warning("request %s %s: %s is unreachable: %s", request.method, request.path,
                           found.dependency, exc)  # fmt: skip
            return outage(found)
        request_id = getattr(g, "request_id", "-")
        logger.exception("request %s %s failed (request id %s)", request.method, request.path,
                         request_id)  # fmt: skip
        return body(500, f"internal error (request id {request_id}); see the server's log"), 500


def outage(exc: Unavailable) -> tuple[dict, int]:
    """503 naming the dependency, and nothing the error said (the server's log has that)."""
    request_id = getattr(g, "request_id", "-")
    message = f"{exc.dependency} is unreachable (request id {request_id}; see the server's log)"
    return body(503, message, {"down": [exc.dependency]}), 503


def _wants_page() -> bool:
    machine = ("/api/", "/metrics", "/healthz", "/readyz")
    if request.path.startswith(machine):
        return False
    accepted = request.accept_mimetypes
    return accepted.accept_html and accepted["text/html"] >= accepted["application/json"]


#: statuses any operation of the API may answer, whatever its own documentation says
_COMMON = {422: "The request is well-formed but cannot be honoured (the message says why)",
           503: "A dependency (Redis, the database) is down: `details.down` names it"}  # fmt: skip


def document(app: APIFlask) -> None:
    """Add to each operation of the OpenAPI document the errors every such route may answer:
    403 (a role too low) where the route needs more than viewer, 404 where a path names
    something, 413 where it takes a body, 415 where it may take one, 422 and 503 everywhere;
    the JSON error body each."""
    roles = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        for method in rule.methods or ():
            roles[(_openapi_path(rule.rule), method.lower())] = getattr(view, "required_role",
                                                                        None)  # fmt: skip

    @app.spec_processor
    def add_error_responses(spec: dict[Any, Any] | str) -> dict[Any, Any] | str:
        if not isinstance(spec, dict):
            return spec
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPError"}}}
        schemas = spec.get("components", {}).get("schemas", {})
        paths = spec.get("paths", {})
        for path, operations in paths.items():
            for method, operation in operations.items():
                _require_a_body_with_required_fields(operation, schemas)
                _leave_out_sibling_routes(path, method, operation, paths)
                role = roles.get((path, method))
                if role is None:
                    continue
                wanted = dict(_COMMON)
                if role != "viewer":
                    wanted[403] = f"The token's role is lower than {role}"
                if "{" in path:
                    wanted[404] = "Not found"
                if "requestBody" in operation:
                    wanted[413] = "The body is larger than TQ_MAX_BODY_BYTES"
                if method in ("post", "put", "patch"):  # a body of another type (bodies.py)
                    wanted[415] = "The body is not JSON (send Content-Type: application/json)"
                responses = operation.setdefault("responses", {})
                for status, text in sorted(wanted.items()):
                    responses.setdefault(str(status), {"description": text, "content": error})
        return spec


def _require_a_body_with_required_fields(
    operation: dict[str, Any], schemas: dict[str, Any]
) -> None:
    """A body with a required field cannot be left out (one whose fields are all optional may
    be: it reads as ``{}``)."""
    body = operation.get("requestBody")
    if not isinstance(body, dict):
        return
    schema = body.get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = schemas.get(ref.rsplit("/", 1)[-1], {})
    body["required"] = bool(schema.get("required"))


def _leave_out_sibling_routes(
    path: str, method: str, operation: dict[str, Any], paths: dict[str, Any]
) -> None:
    """A path parameter cannot be the name of a route beside it (``GET /dlq/stats`` is not the
    dead letter ``stats``), and holds no NUL; its schema says so."""
    parent, _, last = path.rpartition("/")
    if not (last.startswith("{") and last.endswith("}")):
        return
    siblings = sorted(other.rpartition("/")[2] for other, ops in paths.items()
                      if other.rpartition("/")[0] == parent and method in ops
                      and not other.endswith("}"))  # fmt: skip
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "path" and parameter.get("name") == last[1:-1]:
            excluded = "".join(f"(?!{name}$)" for name in siblings)
            parameter.setdefault("schema", {})["pattern"] = f"^{excluded}[^\\x00]+$"


def _openapi_path(rule: str) -> str:
    import re

    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)
