"""Apply the result backend's Alembic migrations from code: no alembic.ini is needed at runtime.

Each app's tables live under a prefix (and optionally a PostgreSQL schema) with their own
``<prefix>alembic_version`` table, so several apps share one database and migrate separately.

Several processes may start at once against an empty database (workers booting together).
On PostgreSQL the whole upgrade is one transaction holding an advisory lock keyed by the
prefix and schema: the first process migrates, the others wait and then find nothing to do.
On SQLite the upgrade runs inside ``BEGIN IMMEDIATE``, so the database's write lock does the
same job.

Alembic reports every step at INFO; a worker or Flower that migrates on first use would print
those lines into its log, so they are kept at WARNING unless the caller asks for them
(``quiet=False``, as ``taskqueue db upgrade --verbose`` does).

To write a new revision, point Alembic at :func:`make_config`::

    command.revision(make_config(), "add a column", rev_id="0002")
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, select
from sqlalchemy import func as sql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateSchema

from .schema import DEFAULT_PREFIX


@contextlib.contextmanager
def _alembic_logs(quiet: bool) -> Iterator[None]:
    """Alembic's own loggers at WARNING (or as configured, when not ``quiet``)."""
    logger = logging.getLogger("alembic")
    before = logger.level
    if quiet and logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


# importing Alembic logs its plugin setup at INFO, into every worker's log; ``naming`` imports
# Alembic too, so it is imported here, after the loggers are turned down, and not above
with _alembic_logs(quiet=True):
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from .migrations.naming import Names

MIGRATIONS = Path(__file__).resolve().with_name("migrations")

# Alembic installs its `context` and `op` proxies process-wide, so two threads must never run
# migrations at the same time (even for different prefixes or databases).
_alembic_lock = threading.Lock()


def make_config(
    connection: Connection | None = None, prefix: str = DEFAULT_PREFIX, schema: str | None = None
) -> Config:
    """An Alembic Config for the packaged migrations; env.py reads ``config.attributes``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes.update(connection=connection, table_prefix=prefix, schema=schema)
    return config


def head() -> str:
    """The newest revision shipped with this package."""
    revision = ScriptDirectory.from_config(make_config()).get_current_head()
    if revision is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}; the package is incomplete")
    return revision


def current(engine: Engine, prefix: str = DEFAULT_PREFIX, schema: str | None = None) -> str | None:
    """The revision the tables under ``prefix``/``schema`` are at; None when never migrated."""
    names = Names(prefix, schema)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"version_table": names.version_table, "version_table_schema": schema},
        )
        return context.get_current_revision()


def upgrade(
    engine: Engine,
    prefix: str = DEFAULT_PREFIX,
    schema: str | None = None,
    revision: str = "head",
    quiet: bool = True,
) -> None:
    """Bring the tables under ``prefix``/``schema`` to ``revision``, creating them if needed.

    Creates the PostgreSQL schema when missing. Safe to call from many processes at once;
    a no-op when the tables are already at ``revision``.
    """
    with _alembic_lock, _alembic_logs(quiet):
        connection = engine.connect()
        if engine.dialect.name == "postgresql":
            # the lock must be visible to the next statement's snapshot, which a caller's
            # REPEATABLE READ default would freeze before the lock is granted
            connection = connection.execution_options(isolation_level="READ COMMITTED")
        with connection, connection.begin():
            if engine.dialect.name == "postgresql":
                _lock_postgresql(connection, prefix, schema)
                if schema:
                    _create_schema(connection, schema)
            elif engine.dialect.name == "sqlite":
                _begin_immediate_sqlite(connection)
            command.upgrade(make_config(connection, prefix, schema), revision)


def _lock_key(prefix: str, schema: str | None) -> int:
    digest = hashlib.blake2b(f"taskqueue_backend:{schema or ''}:{prefix}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _lock_postgresql(connection: Connection, prefix: str, schema: str | None) -> None:
    # transaction-level: released by the commit (or rollback) that ends the upgrade
    connection.execute(select(sql.pg_advisory_xact_lock(_lock_key(prefix, schema))))


def _create_schema(connection: Connection, schema: str) -> None:
    if inspect(connection).has_schema(schema):
        return
    try:
        with connection.begin_nested():
            connection.execute(CreateSchema(schema, if_not_exists=True))
    except DBAPIError:
        # another app (another prefix, so another lock) created it at the same moment: PostgreSQL
        # then reports a duplicate even with IF NOT EXISTS; only re-raise if it still is missing
        if not inspect(connection).has_schema(schema):
            raise


def _begin_immediate_sqlite(connection: Connection) -> None:
    # pysqlite runs DDL outside a transaction; take the write lock first so a second process
    # waits here and then sees the finished tables instead of racing to create them
    dbapi_connection = connection.connection.dbapi_connection
    if not getattr(dbapi_connection, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
