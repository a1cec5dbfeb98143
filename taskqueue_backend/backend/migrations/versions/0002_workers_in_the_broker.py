"""The workers table goes (the broker's consumer registry is the one source of truth);
results get an index on their received time, for listings by that time.

Workers are listed (online, stale, offline, with their counts) from the consumer heartbeats
in Redis, by the same API the CLI, the REST API and the UI use; a second, drifting copy in the
result store is dropped. Downgrading recreates the empty table
and drops the index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from taskqueue_backend.backend.migrations.naming import current_names

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Moment = sa.DateTime(timezone=True)


def upgrade() -> None:
    names = current_names()
    prefix, schema = names.prefix, names.schema
    op.drop_table(f"{prefix}workers", schema=schema)  # its index goes with it
    op.create_index(f"{prefix}results_received", f"{prefix}results", ["received_at"],
                    schema=schema)  # fmt: skip


def downgrade() -> None:
    names = current_names()
    prefix, schema = names.prefix, names.schema
    op.drop_index(f"{prefix}results_received", f"{prefix}results", schema=schema)
    workers = f"{prefix}workers"
    op.create_table(
        workers,
        sa.Column("hostname", sa.String(255), primary_key=True),
        sa.Column("pid", sa.Integer),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("queues", sa.JSON),
        sa.Column("concurrency", sa.Integer),
        sa.Column("active", sa.Integer),
        sa.Column("processed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("first_seen", Moment, nullable=False),
        sa.Column("last_heartbeat", Moment, nullable=False),
        schema=schema,
    )
    op.create_index(f"{prefix}workers_state", workers, ["state", "last_heartbeat"], schema=schema)
