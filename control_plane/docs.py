"""The interactive API documentation, served from installed files only (no CDN).

APIFlask renders Swagger UI at ``/api/v1/docs`` from the OpenAPI document at
``/api/v1/openapi.json``; its scripts and styles come from the ``swagger-ui-bundle-v2`` package
(Swagger UI 5) and are served by the app itself, so the docs work offline.
"""

from __future__ import annotations

from pathlib import Path

from apiflask import APIFlask
from flask import abort, send_from_directory
from werkzeug.wrappers import Response

ASSETS = "/api/v1/docs/assets"
FILES = ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css",
         "favicon-32x32.png")  # fmt: skip


def _folder() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def install(app: APIFlask) -> None:
    app.config.update(
        SWAGGER_UI_BUNDLE_JS=f"{ASSETS}/swagger-ui-bundle.js",
        SWAGGER_UI_STANDALONE_PRESET_JS=f"{ASSETS}/swagger-ui-standalone-preset.js",
        SWAGGER_UI_CSS=f"{ASSETS}/swagger-ui.css",
        DOCS_FAVICON=f"{ASSETS}/favicon-32x32.png",
    )

    @app.get(f"{ASSETS}/<name>")
    @app.doc(hide=True)
    def docs_asset(name: str) -> Response:
        if name not in FILES:
            abort(404)
        return send_from_directory(_folder(), name, max_age=3600)
