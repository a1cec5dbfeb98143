"""State writes handed straight to a deferred writer, as a worker's backend hands them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import states

from taskqueue_backend.backend import deferred
from taskqueue_backend.backend.queries import event_row


def submit_success(writer: deferred.DeferredWriter, backend: Any, task_id: str,
                   result: bytes = b"1", name: str = "bk.add") -> None:  # fmt: skip
    """Queue a SUCCESS of ``task_id`` (its result row and its ``succeeded`` history row) on
    ``writer``, as a write that may commit together with the others queued beside it."""
    now = datetime.now(UTC)
    row = {"task_id": task_id, "state": states.SUCCESS, "name": name, "updated_at": now,
           "result": result, "content_type": "application/json"}  # fmt: skip
    events = [event_row(task_id, "succeeded", states.SUCCESS, "w@h", at=now)]

    def write() -> None:
        backend.store.write(row, events)

    writer.submit(task_id, write, together=deferred.Together(backend, row, events))
