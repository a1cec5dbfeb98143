"""A result backend that stores nothing: Celery's own work per result, with a free store.

``bench/backend.py`` runs it beside the real backends to show the floor any result backend
starts from on this machine: Celery builds each result's meta (``result_extended``), encodes
it and calls the store exactly as it does for its stock Redis backend; only the store itself
(``set``) costs nothing. The worker's CPU above the no-backend run is then Celery's part.
"""

from __future__ import annotations

from typing import Any

from celery.backends.base import KeyValueStoreBackend


class DiscardingBackend(KeyValueStoreBackend):
    """Key-value backend whose keys are written nowhere (reads find nothing: PENDING)."""

    def get(self, key: Any) -> None:
        return None

    def mget(self, keys: Any) -> list[None]:
        return [None for _ in keys]

    def set(self, key: Any, value: Any) -> None:
        pass

    def delete(self, key: Any) -> None:
        pass
