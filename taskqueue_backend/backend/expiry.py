"""Result expiry (``result_expires``, Celery's ``backend_cleanup``) in small batches.

One ``DELETE`` of every expired row would hold its row locks, and its transaction, for as long
as it takes to delete millions of rows, and leave one huge burst of WAL. Here each batch is
one short transaction of at most ``batch_size`` rows, the oldest first (a range of the
``finished_at`` or ``created_at`` index). On PostgreSQL a row a writer holds right now is
skipped (``FOR UPDATE SKIP LOCKED``), so expiry never waits for a task's write, nor makes it
wait; it is deleted by the next cleanup.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, delete, select

if TYPE_CHECKING:
    from .queries import Store


def expire(store: Store, before: datetime, batch_size: int) -> int:
    """Delete results finished, and groups created, before ``before``; results deleted."""
    r, g = store.tables.results, store.tables.groups
    removed = _in_batches(store, r, r.c.task_id, r.c.finished_at, before, batch_size)
    _in_batches(store, g, g.c.group_id, g.c.created_at, before, batch_size)
    return removed


def _in_batches(
    store: Store, table: Table, key: Any, moment: Any, before: datetime, batch_size: int
) -> int:
    chosen = select(key).where(moment < before).order_by(moment).limit(batch_size)
    if store.dialect == "postgresql":
        chosen = chosen.with_for_update(skip_locked=True)
    statement = delete(table).where(key.in_(chosen.scalar_subquery()))

    def one_batch() -> int:
        with store.engine.begin() as conn:
            return int(conn.execute(statement).rowcount or 0)

    total = 0
    while True:
        deleted = store._retrying(one_batch)
        total += deleted
        if deleted < batch_size:
            return total
