"""What the blueprints need from the app they serve: its operations layer (opened on first use)
and the operations acting as the caller of this request.

``app.py`` builds the app and puts a ``Backends`` in ``app.extensions``; the API's and the UI's
views reach it through this module, so nothing imports ``app.py`` back.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import current_app, g

from taskqueue_backend.operations import Operations

from .auth import Principal
from .settings import Settings


class Backends:
    """The one operations layer of an app, opened on first use (a dependency that is down at
    start-up does not keep the process from starting: requests answer 503 until it is up)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ops: Operations | None = None
        self._lock = threading.Lock()

    def ops(self) -> Operations:
        if self._ops is None:
            with self._lock:
                if self._ops is None:
                    self._ops = self._open()
        return self._ops

    def _open(self) -> Operations:
        s = self.settings
        if s.celery_app:
            from celery.app.utils import find_app

            return Operations.from_app(find_app(s.celery_app), actor="control-plane",
                                       pool_size=s.db_pool_size)  # fmt: skip
        return Operations.from_urls(
            s.broker_url,
            s.database_url,
            transport_options={**s.transport_options, "global_keyprefix": s.broker_keyprefix},
            table_prefix=s.table_prefix,
            schema=s.db_schema,
            actor="control-plane",
            pool_size=s.db_pool_size,
        )

    def close(self) -> None:
        if self._ops is not None:
            self._ops.close()
            self._ops = None


def backends(app: Any) -> Backends:
    found: Backends = app.extensions["taskqueue"]
    return found


def acting_ops(principal: Principal) -> Operations:
    """The operations layer acting as ``principal`` for this request (its audit entries and
    history rows carry the name, the role and the request id) — the API's and the UI's."""
    return backends(current_app).ops().acting_as(principal.name, role=principal.role,
                                                 request_id=g.request_id)  # fmt: skip
