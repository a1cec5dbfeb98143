"""On PostgreSQL the history table is partitioned by time (range of ``at``), keeping its rows.

The table of before becomes a partition, not a copy: it is renamed
``<prefix>task_events_before_<date>`` and attached as the partition of every time before the
next UTC midnight after both now and its newest row, so no row is rewritten and every id is
kept (the new table's sequence goes on from the old one's). Attaching reads the old table
once (its rows must fall in that range) and builds the one index the new primary key needs,
``(id, at)``, in place of the old key ``(id)``, unless a unique index on ``(id, at)`` exists
already (it becomes the key): build it beforehand with ``CREATE UNIQUE INDEX CONCURRENTLY``
to keep the upgrade short on a large table. The other indexes are the old table's own, adopted. A
``<prefix>task_events_default`` partition takes any row no partition holds yet; the daily
(or weekly, monthly) partitions are made by ``partitions.py`` after the upgrade. The NOTIFY
trigger of 0003 moves to the new table (same payload: its qualified name). An old table
without rows is dropped instead of attached.

Downgrading copies every row (ids kept) back into one flat table. SQLite keeps the flat table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 07:00:00

"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

from taskqueue_backend.backend.migrations.naming import current_names

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Column types as of this revision (frozen: later changes to schema.py need a new revision).
Moment = sa.DateTime(timezone=True)
TaskId = sa.String(255)
INDEXES = {"task": ("task_id", "at"), "event_at": ("event", "at"), "at": ("at",)}
COLUMNS = "id, task_id, event, state, at, worker, detail"
#: a valid unique index of the old table on exactly (id, at), built by the operator beforehand
PREBUILT_KEY = """
    SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indrelid = to_regclass(:t) AND i.indisunique AND i.indisvalid
      AND i.indpred IS NULL AND i.indexprs IS NULL
      AND (SELECT array_agg(a.attname::text ORDER BY k.n)
           FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
          = ARRAY['id', 'at']
    LIMIT 1"""


def _columns(key: tuple[str, ...]) -> list[Any]:
    return [
        sa.Column("id", sa.BigInteger, nullable=False, autoincrement=True),
        sa.Column("task_id", TaskId, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("state", sa.String(50)),
        sa.Column("at", Moment, nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("detail", sa.JSON),
        sa.PrimaryKeyConstraint(*key, name=None),
    ]


class _Names:
    def __init__(self) -> None:
        names = current_names()
        self.prefix, self.schema = names.prefix, names.schema
        self.table = f"{names.prefix}task_events"
        self.trigger = f'"{names.prefix}task_events_notify"'
        self.function = self.q(f"{names.prefix}notify_task_events")

    def q(self, name: str) -> str:
        """``name`` quoted and qualified by the schema."""
        return f'"{self.schema}"."{name}"' if self.schema else f'"{name}"'

    def sequence_of(self, table: str) -> str:
        found = (
            op.get_bind()
            .execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": self.q(table)})
            .scalar()
        )
        if not found:
            raise RuntimeError(f"{self.q(table)}.id has no sequence; expected revision 0003")
        return str(found)

    def notify_on(self, table: str) -> None:
        op.execute(f"CREATE TRIGGER {self.trigger} AFTER INSERT ON {self.q(table)} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {self.function}()")  # fmt: skip

    def create_indexes(self, table: str) -> None:
        for suffix, columns in INDEXES.items():
            op.create_index(f"{self.table}_{suffix}", table, list(columns), schema=self.schema)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    n = _Names()
    bind = op.get_bind()
    old = n.q(n.table)
    op.execute(f"DROP TRIGGER IF EXISTS {n.trigger} ON {old}")
    newest = bind.execute(sa.text(f"SELECT max(at) FROM {old}")).scalar()
    if newest is None:
        op.drop_table(n.table, schema=n.schema)  # its sequence and indexes go with it
        before = None
    else:
        latest = max(datetime.now(UTC), newest.astimezone(UTC))
        upper = latest.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        before = f"{n.table}_before_{upper:%Y%m%d}"
        old_sequence = n.sequence_of(n.table)
        op.rename_table(n.table, before, schema=n.schema)
        for suffix in INDEXES:
            op.execute(f'ALTER INDEX {n.q(f"{n.table}_{suffix}")} RENAME TO "{before}_{suffix}"')
        # a partition takes the table's key (id, at): its own (id) goes, and a unique index
        # on (id, at) built beforehand becomes its key (attaching then builds none)
        op.execute(f'ALTER TABLE {n.q(before)} DROP CONSTRAINT "{n.table}_pkey"')
        built = bind.execute(sa.text(PREBUILT_KEY), {"t": n.q(before)}).scalar()
        if built:
            op.execute(f'ALTER TABLE {n.q(before)} ADD CONSTRAINT "{before}_pkey" '
                       f'PRIMARY KEY USING INDEX "{built}"')  # fmt: skip
        op.execute(f'ALTER SEQUENCE {old_sequence} RENAME TO "{before}_id_seq"')
        old_sequence = n.q(f"{before}_id_seq")
    op.create_table(n.table, *_columns(("id", "at")), schema=n.schema,
                    postgresql_partition_by="RANGE (at)")  # fmt: skip
    n.create_indexes(n.table)
    if before is not None:
        # the new sequence goes on where the old one stopped, so ids stay unique
        op.execute(f"SELECT setval('{n.sequence_of(n.table)}', last_value, is_called) "
                   f"FROM {old_sequence}")  # fmt: skip
        op.execute(f"ALTER TABLE {n.q(before)} ALTER COLUMN id DROP DEFAULT")
        op.execute(f"DROP SEQUENCE {old_sequence}")
        op.execute(f"ALTER TABLE {n.q(n.table)} ATTACH PARTITION {n.q(before)} "
                   f"FOR VALUES FROM (MINVALUE) TO ('{upper.isoformat()}')")  # fmt: skip
    op.execute(f"CREATE TABLE {n.q(f'{n.table}_default')} PARTITION OF {n.q(n.table)} DEFAULT")
    n.notify_on(n.table)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    n = _Names()
    partitioned = f"{n.table}_partitioned"
    op.execute(f"DROP TRIGGER IF EXISTS {n.trigger} ON {n.q(n.table)}")
    op.rename_table(n.table, partitioned, schema=n.schema)
    for suffix in (*INDEXES, "pkey"):
        op.execute(f'ALTER INDEX {n.q(f"{n.table}_{suffix}")} RENAME TO "{partitioned}_{suffix}"')
    old_sequence = n.sequence_of(partitioned)
    op.execute(f'ALTER SEQUENCE {old_sequence} RENAME TO "{partitioned}_id_seq"')
    old_sequence = n.q(f"{partitioned}_id_seq")
    op.create_table(n.table, *_columns(("id",)), schema=n.schema)
    op.execute(f"INSERT INTO {n.q(n.table)} ({COLUMNS}) SELECT {COLUMNS} "
               f"FROM {n.q(partitioned)} ORDER BY id")  # fmt: skip
    op.execute(f"SELECT setval('{n.sequence_of(n.table)}', last_value, is_called) "
               f"FROM {old_sequence}")  # fmt: skip
    op.drop_table(partitioned, schema=n.schema)  # its partitions and sequence go with it
    n.create_indexes(n.table)
    n.notify_on(n.table)
