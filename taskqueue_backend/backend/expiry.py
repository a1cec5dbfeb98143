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

from sqlalchemy import Table, delete, select, text

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
    one_batch = _postgresql_batch if store.dialect == "postgresql" else _portable_batch
    total, after = 0, datetime.min.replace(tzinfo=UTC)
    while True:
        run = functools.partial(one_batch, store, table, key, moment, after, before, batch_size)
        deleted, after = store._retrying(run)
        total += deleted
        if deleted < batch_size:
            return total


def _postgresql_batch(
    store: Store, table: Table, key: Any, moment: Any, after: datetime, before: datetime,
    batch_size: int,
) -> tuple[int, datetime]:  # fmt: skip
    """One statement: the rows chosen by the index are deleted by their ``ctid``."""
    name = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    column = f'"{moment.name}"'
    statement = text(
        f"WITH gone AS (DELETE FROM {name} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {name} WHERE {column} >= :after AND {column} < :before "
        f"ORDER BY {column} LIMIT {int(batch_size)} FOR UPDATE SKIP LOCKED)) "
        f"RETURNING {column}) SELECT count(*), max({column}) FROM gone"
    )
    with store.engine.begin() as conn:
        deleted, last = conn.execute(statement, {"after": after, "before": before}).one()
    return int(deleted), last or after


def _portable_batch(
    store: Store, table: Table, key: Any, moment: Any, after: datetime, before: datetime,
    batch_size: int,
) -> tuple[int, datetime]:  # fmt: skip
    """SQLite: the keys of the batch, then their rows (one writer at a time there anyway)."""
    chosen = (select(key, moment).where(moment >= after, moment < before)
              .order_by(moment).limit(batch_size))  # fmt: skip
    with store.engine.begin() as conn:
        rows = conn.execute(chosen).all()
        if rows:
            conn.execute(delete(table).where(key.in_([row[0] for row in rows])))
    return len(rows), max((row[1] for row in rows), default=after)
