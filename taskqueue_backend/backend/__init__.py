"""The result backend: results and the full history of every task, in PostgreSQL or SQLite.

Selected by URL only (``celery.result_backends`` entry point ``tq``)::

    result_backend = "tq+postgresql+psycopg://user:pw@host/db"
    result_backend = "tq+sqlite:///results.db"
"""

from typing import Any


def __getattr__(name: str) -> Any:
    # imported lazily: `taskqueue db upgrade` and the migrations need no Celery backend
    if name == "DatabaseBackend":
        from .backend import DatabaseBackend

        return DatabaseBackend
    raise AttributeError(name)


__all__ = ["DatabaseBackend"]
