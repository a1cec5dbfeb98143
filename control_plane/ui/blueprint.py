"""The admin UI's blueprint: its pages, its static files at ``/ui/static``, and the headers
every response carries (but the API's interactive docs, which Swagger UI renders with inline
script) — a Content-Security-Policy that allows no inline script or style and no framing, no
content sniffing, no referrer outside the site."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import Response, request

# an APIBlueprint only so that APIFlask's OpenAPI generator can tell it to leave these pages out
bp = APIBlueprint("ui", __name__, template_folder="templates", static_folder="static",
                  static_url_path="/ui/static", enable_openapi=False)  # fmt: skip

DOCS_PATH = "/api/v1/docs"
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def security_headers(response: Response) -> Response:
    if request.path.startswith(DOCS_PATH):
        return response
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
