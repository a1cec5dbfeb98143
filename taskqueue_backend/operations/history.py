"""The history rows operations write, through the result store they were given.

A replay reopens its tasks and records ``replayed``; deleting dead letters records
``dead_letter_deleted``; removing a waiting task records ``revoked`` (and the REVOKED result);
recovering a stale worker records ``returned`` and ``dead_lettered`` (poison). Each row names
the acting operator, with the context of its audit entry (the API's role and request id).
Without a result store (an operations layer built from a broker URL only) nothing is written,
and the callers say so where it matters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import lifecycle
from ..clock import from_epoch, utcnow

if TYPE_CHECKING:
    from .api import Operations


def _row(task_id: str, event: str, state: str | None, worker: str | None,
         detail: dict[str, Any], at: Any) -> dict[str, Any]:  # fmt: skip
    from ..backend.queries import event_row

    return event_row(task_id, event, state, worker, detail, at)


def record(ops: Operations, event: str, task_ids: Iterable[str], detail: dict[str, Any]) -> None:
    """One ``event`` row for each task (none for an empty task id)."""
    if ops.results is None:
        return
    now = utcnow()
    detail = {**ops.context, **detail}
    rows = [_row(t, event, None, None, detail, now) for t in task_ids if t]
    if rows:
        ops.results.write(None, rows)


def record_broker_events(ops: Operations, events: list[lifecycle.MessageEvent]) -> None:
    """What a recovery did, as the broker tells its listeners (``transport.recovery``)."""
    if ops.results is None:
        return
    rows = [_row(e.task_id, e.event, None, e.worker, {"queue": e.queue, **e.detail},
                 from_epoch(e.at) or utcnow()) for e in events if e.task_id]  # fmt: skip
    if rows:
        ops.results.write(None, rows)


def reopen(ops: Operations, tasks: list[tuple[str, dict[str, Any]]]) -> None:
    """Replayed tasks back to PENDING, each with its ``replayed`` row, in one transaction."""
    if ops.results is None or not tasks:
        return
    now = utcnow()
    rows = [
        _row(t, lifecycle.REPLAYED, "PENDING", None, {**ops.context, **detail}, now)
        for t, detail in tasks
    ]
    ops.results.reopen(rows, now)


def revoke(ops: Operations, task_id: str, columns: dict[str, Any], detail: dict[str, Any]) -> bool:
    """A task that can never run: REVOKED (unless it already ended) with its ``revoked`` row."""
    if ops.results is None:
        return False
    now = utcnow()
    row = {"task_id": task_id, "state": "REVOKED", "finished_at": now, "updated_at": now,
           **columns}  # fmt: skip
    detail = {**ops.context, **detail}
    ops.results.write(row, [_row(task_id, lifecycle.REVOKED, "REVOKED", None, detail, now)])
    return True
