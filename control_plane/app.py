"""The control plane's app factory: ``create_app(settings=None)``.

A thin Flask layer (APIFlask, so the OpenAPI document is generated from the same pydantic
models that validate requests) over ``taskqueue_backend.operations``: each route parses its
input, calls one operation acting as the caller, and returns its data object. Served in
production by ``taskqueue control-plane`` (gunicorn) and in development by
``flask --app control_plane run``.
"""

from __future__ import annotations

import uuid

from apiflask import APIFlask, abort
from flask import Response, g, request

from taskqueue_backend import __version__

from . import auth, bodies, context, docs, errors
from .settings import Settings

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None) -> APIFlask:
    """The control plane for ``settings`` (default: from the environment, see ``settings``)."""
    settings = settings or Settings.from_env()
    settings.check()
    tokens = auth.TokenRegistry(settings.api_tokens)
    app = APIFlask(
        "control_plane",
        title="taskqueue control plane",
        version=__version__,
        spec_path=f"{API_PREFIX}/openapi.json",
        docs_path=f"{API_PREFIX}/docs",
        docs_oauth2_redirect_path=None,
        static_folder=None,  # type: ignore[arg-type]  # Flask accepts None: no /static route
    )
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        VALIDATION_ERROR_STATUS_CODE=400,
        VALIDATION_ERROR_SCHEMA=errors.ERROR_SCHEMA,
        HTTP_ERROR_SCHEMA=errors.ERROR_SCHEMA,
        AUTO_OPERATION_ID=True,
        DESCRIPTION=(
            "Tasks, queues, dead letters, workers and the audit log of a taskqueue broker and "
            "result store. Every route needs a bearer token (`Authorization: Bearer <token>`) "
            "of at least the role it names: viewer < operator < admin."
        ),
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # fields in the models' order
    app.extensions["taskqueue"] = context.Backends(settings)
    app.extensions["taskqueue.settings"] = settings
    app.extensions["taskqueue.tokens"] = tokens
    docs.install(app)
    errors.install(app)

    @app.before_request
    def identify_request() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if 0 < len(given) <= 100 and given.isprintable() else uuid.uuid4().hex

    bodies.install(app)

    @app.before_request
    def deny_by_default() -> None:
        """A route of the API that does not name the role it needs is refused (so a route
        added without one is never open by accident); the OpenAPI document and its docs page
        are public: they describe the API, not its data."""
        view = app.view_functions.get(request.endpoint or "")
        if view is None or not request.path.startswith(API_PREFIX):
            return
        if request.endpoint and request.endpoint.startswith("openapi."):
            return
        if request.endpoint == "docs_asset":
            return
        if getattr(view, "required_role", None) is None:
            abort(403, "this route names no role, so it is refused")

    @app.after_request
    def tag_response(response: Response) -> Response:
        response.headers["X-Request-ID"] = getattr(g, "request_id", "")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    from . import api, refusals, ui

    api.register(app)
    ui.register(app, settings)
    refusals.install(app)
    errors.document(app)
    return app
