"""Every table of the result backend, in one place (SQLAlchemy Core).

Names carry a configurable prefix (``taskqueue_table_prefix``, default ``tq_``) and may live in
a PostgreSQL schema (``taskqueue_db_schema``). Changes to these tables ship as Alembic
migrations in ``taskqueue_backend/backend/migrations``; a test checks that the migrations
build exactly these tables.

On PostgreSQL the history (``task_events``) is partitioned by range of ``at`` (its partitions
are made and dropped by ``partitions.py``, on the grid of ``periods.py``), so its primary key
holds the partition key: ``(id, at)``; ids still come from one sequence and stay unique.
SQLite keeps the flat table, keyed by ``id`` alone (the only key it autoincrements).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

DEFAULT_PREFIX = "tq_"

# SQLite only autoincrements an INTEGER PRIMARY KEY
BigId = BigInteger().with_variant(Integer(), "sqlite")
Moment = DateTime(timezone=True)
TaskId = String(255)


@dataclass(frozen=True)
class Tables:
    """The backend's tables under one prefix/schema."""

    metadata: MetaData
    results: Table
    events: Table
    groups: Table
    partitioned: bool = False  # the history is partitioned by time (PostgreSQL)


def build_tables(
    prefix: str = DEFAULT_PREFIX, schema: str | None = None, partitioned: bool = False
) -> Tables:
    """The tables under ``prefix``/``schema``; ``partitioned`` for PostgreSQL's history."""
    metadata = MetaData(schema=schema)

    results = Table(
        f"{prefix}results",
        metadata,
        Column("task_id", TaskId, primary_key=True),
        Column("state", String(50), nullable=False),
        Column("name", String(255)),
        Column("args", LargeBinary),
        Column("kwargs", LargeBinary),
        Column("result", LargeBinary),
        Column("children", LargeBinary),
        Column("content_type", String(128)),
        Column("content_encoding", String(64)),
        Column("traceback", Text),
        Column("exception_type", String(255)),
        Column("exception_message", Text),
        Column("worker", String(255)),
        Column("retries", Integer),
        Column("queue", String(255)),
        Column("parent_id", TaskId),
        Column("root_id", TaskId),
        Column("group_id", TaskId),
        Column("sent_at", Moment),
        Column("received_at", Moment),
        Column("started_at", Moment),
        Column("finished_at", Moment),
        Column("updated_at", Moment, nullable=False),
        Index(f"{prefix}results_state_updated", "state", "updated_at"),
        Index(f"{prefix}results_name_updated", "name", "updated_at"),
        Index(f"{prefix}results_queue_updated", "queue", "updated_at"),
        Index(f"{prefix}results_worker_updated", "worker", "updated_at"),
        Index(f"{prefix}results_finished", "finished_at"),
        Index(f"{prefix}results_received", "received_at"),
        Index(f"{prefix}results_updated", "updated_at"),
        Index(f"{prefix}results_group", "group_id"),
        Index(f"{prefix}results_root", "root_id"),
    )

    key = ("id", "at") if partitioned else ("id",)
    partitioning: dict[str, Any] = {"postgresql_partition_by": "RANGE (at)"} if partitioned else {}
    events = Table(
        f"{prefix}task_events",
        metadata,
        Column("id", BigId, nullable=False, autoincrement=True),
        Column("task_id", TaskId, nullable=False),
        Column("event", String(32), nullable=False),
        Column("state", String(50)),
        Column("at", Moment, nullable=False),
        Column("worker", String(255)),
        Column("detail", JSON),
        PrimaryKeyConstraint(*key),
        Index(f"{prefix}task_events_task", "task_id", "at"),
        Index(f"{prefix}task_events_event_at", "event", "at"),
        Index(f"{prefix}task_events_at", "at"),
        **partitioning,
    )

    groups = Table(
        f"{prefix}groups",
        metadata,
        Column("group_id", TaskId, primary_key=True),
        Column("result", LargeBinary),
        Column("content_type", String(128)),
        Column("content_encoding", String(64)),
        Column("chord_size", Integer),
        Column("chord_done", Integer, nullable=False, server_default="0"),
        Column("created_at", Moment, nullable=False),
        Index(f"{prefix}groups_created", "created_at"),
    )

    return Tables(metadata, results, events, groups, partitioned)


def tables_for(dialect: str, prefix: str = DEFAULT_PREFIX, schema: str | None = None) -> Tables:
    """The tables as the migrations build them on ``dialect`` (``postgresql`` or ``sqlite``)."""
    return build_tables(prefix, schema, partitioned=dialect == "postgresql")
