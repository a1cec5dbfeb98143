"""Alembic environment of the result backend, driven from code by ``migrate.upgrade``.

There is no alembic.ini: :func:`taskqueue_backend.backend.migrate.make_config` builds the
Config and puts an open connection (already inside the transaction that holds the migration
lock), the table prefix and the schema into ``config.attributes``. The revision is kept in
``<prefix>alembic_version`` next to the tables, so apps with different prefixes share a
database without sharing a version.
"""

from __future__ import annotations

from alembic import context

from taskqueue_backend.backend.migrations.naming import Names
from taskqueue_backend.backend.schema import tables_for


def run_migrations() -> None:
    config = context.config
    if context.is_offline_mode():
        raise RuntimeError(
            "offline (--sql) migrations are not supported: the result backend migrates through "
            "a live connection; run `taskqueue db upgrade --url ...`"
        )
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "no connection in config.attributes['connection']; run the migrations through "
            "taskqueue_backend.backend.migrate.upgrade() or `taskqueue db upgrade`"
        )
    names = Names.from_attributes(config.attributes)
    context.configure(
        connection=connection,
        target_metadata=tables_for(connection.dialect.name, names.prefix, names.schema).metadata,
        version_table=names.version_table,
        version_table_schema=names.schema,
        # SQLite cannot ALTER most things; batch mode recreates the table instead
        render_as_batch=connection.dialect.name == "sqlite",
        # autogenerate (writing a new revision) looks only at this app's tables
        include_schemas=names.schema is not None,
        include_name=names.owns,
        compare_server_default=True,
        taskqueue_names=names,  # naming.CONTEXT_KEY, read back by current_names()
    )
    # the caller's transaction is already open, so this commits nothing by itself
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
