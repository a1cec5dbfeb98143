"""The admin UI: server-rendered pages over the same operations layer as the REST API.

Pages: ``/`` (overview), ``/tasks``, ``/tasks/<id>``, ``/queues``, ``/dlq``, ``/dlq/<id>``,
``/workers``, ``/audit``, ``/find`` (the search box of every page) and ``/login``, served by
the same process as ``/api/v1``. Templates live next to this blueprint (``templates/ui``), the
stylesheet and two small scripts in ``static`` (no third-party code, nothing from a CDN: it
works offline). Sign-in, sessions and CSRF: ``session`` (each sign-in recorded in Redis:
``sign_ins``); what pages read from requests and how actions confirm: ``forms``; errors as
pages: ``error_pages``.
"""

from __future__ import annotations

import importlib

from flask import Flask

from ..settings import Settings

#: the modules that add routes and handlers to the blueprint (imported once, before it is
#: registered with any app)
PAGES = ("overview", "tasks", "queues", "dead_letters", "workers", "audit", "find", "live",
         "error_pages")  # fmt: skip


def register(app: Flask, settings: Settings) -> None:
    from . import formatting, session
    from .blueprint import bp, security_headers
    from .error_pages import error_page

    for module in PAGES:
        importlib.import_module(f"{__name__}.{module}")
    session.install(app, settings)
    formatting.install(app)
    app.jinja_env.globals["may"] = session.may
    app.extensions["taskqueue.error_page"] = error_page
    app.after_request(security_headers)
    app.register_blueprint(bp)
