"""Live updates for the admin UI: the change feed as server-sent events over the session
cookie (``/ui/stream``; an ``EventSource`` cannot send a bearer token). The page script
(``static/live.js``) re-reads the page's live regions when a change concerns them. A stream
ends after ``MAX_SECONDS`` and the browser reconnects, so server threads are not held
forever by forgotten tabs."""

from __future__ import annotations

from flask import Response, current_app, g

from ..streaming import stream_response
from .blueprint import bp
from .session import page

MAX_SECONDS = 300.0


@bp.get("/ui/stream")
@page("viewer", redirect_to_login=False)  # an EventSource cannot follow a login page
def live_stream() -> Response:
    settings = current_app.extensions["taskqueue.settings"]
    return stream_response(g.ops, None, settings, g.principal.name, MAX_SECONDS)
