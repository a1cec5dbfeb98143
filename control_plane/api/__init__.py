"""The ``/api/v1`` blueprints (one per concern) and the health and metrics endpoints."""

from __future__ import annotations

from apiflask import APIFlask


def register(app: APIFlask) -> None:
    from . import dead_letters, health, operations, queues, tasks, workers

    for module in (tasks, dead_letters, workers, queues, operations, health):
        app.register_blueprint(module.bp)
