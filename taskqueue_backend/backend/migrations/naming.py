"""Where one app's tables live: the table prefix and schema every migration builds names from.

:func:`taskqueue_backend.backend.migrate.make_config` puts them into ``config.attributes``;
``env.py`` hands them to the migration context, and each migration reads them back with
:func:`current_names`. A migration never hard-codes a table name or a schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alembic import op
from alembic.runtime.environment import NameFilterParentNames, NameFilterType

from taskqueue_backend.backend.periods import is_partition_name
from taskqueue_backend.backend.schema import DEFAULT_PREFIX

# key of the Names object among the migration context's options (env.py passes it by this name)
CONTEXT_KEY = "taskqueue_names"


@dataclass(frozen=True)
class Names:
    """The prefix and schema of one app's tables, and the names derived from them."""

    prefix: str = DEFAULT_PREFIX
    schema: str | None = None

    @property
    def version_table(self) -> str:
        """One version table per prefix, so apps sharing a database migrate independently."""
        return f"{self.prefix}alembic_version"

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any]) -> Names:
        prefix = attributes.get("table_prefix")
        return cls(DEFAULT_PREFIX if prefix is None else prefix, attributes.get("schema") or None)

    def owns(
        self, name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
    ) -> bool:
        """Alembic ``include_name`` hook: autogenerate compares only this app's tables (the
        history's partitions are made at run time, not by migrations, and are left out)."""
        if type_ == "schema":
            return name == self.schema
        if type_ == "table":
            return (
                name is not None
                and name.startswith(self.prefix)
                and name != self.version_table
                and not is_partition_name(f"{self.prefix}task_events", name)
            )
        return True


def current_names() -> Names:
    """The names of the migration being run (call inside ``upgrade()``/``downgrade()``)."""
    names = op.get_context().opts.get(CONTEXT_KEY)
    if not isinstance(names, Names):
        raise RuntimeError(
            "the migration context carries no table prefix/schema; run the migrations through "
            "taskqueue_backend.backend.migrate.upgrade() or `taskqueue db upgrade`"
        )
    return names
