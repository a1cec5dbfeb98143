"""The control plane: a Flask app (REST API with an OpenAPI document, health, metrics) over
``taskqueue_backend.operations``. See ``create_app``."""

from .app import create_app

__all__ = ["create_app"]
