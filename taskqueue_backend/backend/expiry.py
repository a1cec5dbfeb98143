"""Result expiry (``result_expires``, Celery's ``backend_cleanup``) in small batches.

One ``DELETE`` of every expired row would hold its row locks, and its transaction, for as long
as it takes to delete millions of rows, and leave one huge burst of WAL. Here each batch is
one short transaction of at most ``batch_size`` rows, the oldest first (a range of the
``finished_at`` or ``created_at`` index, from where the previous batch ended). On PostgreSQL
a row a writer holds right now is skipped (``FOR UPDATE SKIP LOCKED``), so expiry never
waits for a task's write, nor makes it wait; it is deleted by the next cleanup.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, bindparam, delete, select

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
    """Each batch starts where the previous one ended (``moment >= after``), so no batch
    walks again over the index entries of the rows the earlier batches deleted."""
    chosen = select(key, moment).where(moment >= bindparam("after"), moment < before)
    chosen = chosen.order_by(moment).limit(batch_size)
    if store.dialect == "postgresql":
        chosen = chosen.with_for_update(skip_locked=True)
    removal = delete(table).where(key.in_(bindparam("keys", expanding=True)))

    def one_batch(after: datetime) -> tuple[int, datetime]:
        with store.engine.begin() as conn:
            rows = conn.execute(chosen, {"after": after}).all()
            if rows:
                conn.execute(removal, {"keys": [row[0] for row in rows]})
        return len(rows), max((row[1] for row in rows), default=after)

    total, after = 0, datetime.min.replace(tzinfo=UTC)
    while True:
        deleted, after = store._retrying(functools.partial(one_batch, after))
        total += deleted
        if deleted < batch_size:
            return total
