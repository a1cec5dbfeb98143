"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Build every table and index name from ``current_names()`` (prefix and schema are per app) and
spell column types out here: a migration is frozen, it never imports the current schema.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from taskqueue_backend.backend.migrations.naming import current_names
${imports if imports else ""}
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    names = current_names()
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    names = current_names()
    ${downgrades if downgrades else "pass"}
