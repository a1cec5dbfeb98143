"""On PostgreSQL, a new history row wakes whoever listens: a statement-level trigger on the
history table sends ``NOTIFY taskqueue_events`` with the table's qualified name, so the
control plane's live views (``/api/v1/stream``) learn of a task's change at once instead of
polling. One notification per inserting statement (PostgreSQL folds identical ones of a
transaction into one); listeners filter by the payload, so apps sharing a database do not
wake each other's views. Nothing changes on SQLite (live views poll there).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from taskqueue_backend.backend.migrations.naming import current_names
from taskqueue_backend.backend.notifications import CHANNEL

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _names() -> tuple[str, str, str]:
    names = current_names()
    qualify = f'"{names.schema}".' if names.schema else ""
    function = f'{qualify}"{names.prefix}notify_task_events"'
    table = f'{qualify}"{names.prefix}task_events"'
    return function, table, f'"{names.prefix}task_events_notify"'


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    function, table, trigger = _names()
    op.execute(f"""
        CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
            RETURN NULL;
        END $$
    """)  # fmt: skip
    op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    op.execute(f"CREATE TRIGGER {trigger} AFTER INSERT ON {table} "
               f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()")  # fmt: skip


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    function, table, trigger = _names()
    op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    op.execute(f"DROP FUNCTION IF EXISTS {function}()")
