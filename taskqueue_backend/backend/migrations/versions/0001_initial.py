"""Initial tables: results, task events (the audit history), groups/chords, workers.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 11:43:40

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from taskqueue_backend.backend.migrations.naming import current_names

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Column types as of this revision (frozen: later changes to schema.py need a new revision).
# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL makes this a BIGSERIAL.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Moment = sa.DateTime(timezone=True)
TaskId = sa.String(255)


def upgrade() -> None:
    names = current_names()
    prefix, schema = names.prefix, names.schema

    results = f"{prefix}results"
    op.create_table(
        results,
        sa.Column("task_id", TaskId, primary_key=True),
        sa.Column("state", sa.String(50), nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("args", sa.LargeBinary),
        sa.Column("kwargs", sa.LargeBinary),
        sa.Column("result", sa.LargeBinary),
        sa.Column("children", sa.LargeBinary),
        sa.Column("content_type", sa.String(128)),
        sa.Column("content_encoding", sa.String(64)),
        sa.Column("traceback", sa.Text),
        sa.Column("exception_type", sa.String(255)),
        sa.Column("exception_message", sa.Text),
        sa.Column("worker", sa.String(255)),
        sa.Column("retries", sa.Integer),
        sa.Column("queue", sa.String(255)),
        sa.Column("parent_id", TaskId),
        sa.Column("root_id", TaskId),
        sa.Column("group_id", TaskId),
        sa.Column("sent_at", Moment),
        sa.Column("received_at", Moment),
        sa.Column("started_at", Moment),
        sa.Column("finished_at", Moment),
        sa.Column("updated_at", Moment, nullable=False),
        schema=schema,
    )
    op.create_index(
        f"{prefix}results_state_updated", results, ["state", "updated_at"], schema=schema
    )
    op.create_index(f"{prefix}results_name_updated", results, ["name", "updated_at"], schema=schema)
    op.create_index(
        f"{prefix}results_queue_updated", results, ["queue", "updated_at"], schema=schema
    )
    op.create_index(
        f"{prefix}results_worker_updated", results, ["worker", "updated_at"], schema=schema
    )
    op.create_index(f"{prefix}results_finished", results, ["finished_at"], schema=schema)
    op.create_index(f"{prefix}results_updated", results, ["updated_at"], schema=schema)
    op.create_index(f"{prefix}results_group", results, ["group_id"], schema=schema)
    op.create_index(f"{prefix}results_root", results, ["root_id"], schema=schema)

    events = f"{prefix}task_events"
    op.create_table(
        events,
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("task_id", TaskId, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("state", sa.String(50)),
        sa.Column("at", Moment, nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("detail", sa.JSON),
        schema=schema,
    )
    op.create_index(f"{prefix}task_events_task", events, ["task_id", "at"], schema=schema)
    op.create_index(f"{prefix}task_events_event_at", events, ["event", "at"], schema=schema)
    op.create_index(f"{prefix}task_events_at", events, ["at"], schema=schema)

    groups = f"{prefix}groups"
    op.create_table(
        groups,
        sa.Column("group_id", TaskId, primary_key=True),
        sa.Column("result", sa.LargeBinary),
        sa.Column("content_type", sa.String(128)),
        sa.Column("content_encoding", sa.String(64)),
        sa.Column("chord_size", sa.Integer),
        sa.Column("chord_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", Moment, nullable=False),
        schema=schema,
    )
    op.create_index(f"{prefix}groups_created", groups, ["created_at"], schema=schema)

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


def downgrade() -> None:
    names = current_names()
    # dropping a table drops its indexes (and, on PostgreSQL, the id sequence) with it
    for table in ("workers", "groups", "task_events", "results"):
        op.drop_table(f"{names.prefix}{table}", schema=names.schema)
