"""The packaged Alembic migrations build exactly the tables of schema.py, on SQLite and PostgreSQL.

PostgreSQL tests run in a fresh schema each (dropped with CASCADE afterwards) on
``$DATABASE_URL`` (default postgresql+psycopg://postgres@127.0.0.1:5432/test); SQLite tests use
a temporary file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, insert, inspect, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from taskqueue_backend.backend.migrate import current, head, make_config, upgrade
from taskqueue_backend.backend.periods import is_partition_name
from taskqueue_backend.backend.schema import tables_for
from tests.backend_app import make_app
from tests.support import StartWorker, wait_for

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TASKQUEUE = Path(sys.executable).parent / "taskqueue"
REPO_ROOT = Path(__file__).resolve().parent.parent
TABLES = ("results", "task_events", "groups")


@dataclass(frozen=True)
class Database:
    """One isolated place to migrate into: a temp SQLite file or a fresh PostgreSQL schema."""

    url: str
    schema: str | None
    engine: Engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


@pytest.fixture(scope="module")
def postgres_url() -> str:
    configured = os.environ.get("DATABASE_URL")
    url = (configured or DEFAULT_DATABASE_URL).removeprefix("tq+")
    if not url.startswith("postgresql"):
        pytest.skip(f"DATABASE_URL={configured} is not a PostgreSQL URL")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        if configured:
            pytest.fail(f"DATABASE_URL={configured} does not accept connections: {exc.orig}")
        pytest.skip(f"no PostgreSQL at {url} ({exc.orig}); set DATABASE_URL to test against one")
    finally:
        engine.dispose()
    return url


@pytest.fixture
def postgres(postgres_url: str) -> Iterator[Database]:
    """A schema name of our own; the migrations create it, the teardown drops it."""
    schema = f"tqtest_{uuid.uuid4().hex[:10]}"
    engine = create_engine(postgres_url, poolclass=NullPool)
    try:
        yield Database(postgres_url, schema, engine)
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'results.db'}"
    engine = create_engine(url, poolclass=NullPool)
    yield Database(url, None, engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Database:
    fixture = "postgres" if request.param == "postgresql" else "sqlite"
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


def table_names(database: Database) -> set[str]:
    """The tables, without the history's partitions (made at run time, not by migrations)."""
    names = inspect(database.engine).get_table_names(schema=database.schema)
    return {
        n for n in names if not is_partition_name(n.rsplit("task_events_", 1)[0] + "task_events", n)
    }


def build_tables(prefix: str, schema: str | None, database: Database) -> Any:
    return tables_for(database.dialect, prefix, schema)


def schema_differences(database: Database, prefix: str) -> list[Any]:
    """What Alembic autogenerate would change to turn the database into build_tables()."""
    version_table = f"{prefix}alembic_version"

    def ours(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "schema":
            return name == database.schema
        if type_ == "table":
            return (
                bool(name and name.startswith(prefix))
                and name != version_table
                and not is_partition_name(f"{prefix}task_events", str(name))
            )
        return True

    with database.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": database.schema is not None,
                "include_name": ours,
                "compare_type": True,
                "compare_server_default": True,
                "version_table": version_table,
                "version_table_schema": database.schema,
            },
        )
        return compare_metadata(context, build_tables(prefix, database.schema, database).metadata)


def test_upgrade_from_empty_creates_every_table_at_head(database: Database) -> None:
    assert current(database.engine, "app_", database.schema) is None

    upgrade(database.engine, "app_", database.schema)

    assert table_names(database) == {f"app_{t}" for t in (*TABLES, "alembic_version")}
    assert current(database.engine, "app_", database.schema) == head() == "0004"


def test_migrated_tables_equal_schema_module(database: Database) -> None:
    before = schema_differences(database, "app_")
    assert {diff[1].name for diff in before if diff[0] == "add_table"} == {
        f"app_{t}" for t in TABLES
    }

    upgrade(database.engine, "app_", database.schema)

    assert schema_differences(database, "app_") == []


def test_comparison_notices_a_missing_index(database: Database) -> None:
    upgrade(database.engine, "app_", database.schema)
    index = next(i for i in build_tables("app_", database.schema, database).results.indexes)
    with database.engine.begin() as connection:
        index.drop(connection)

    differences = schema_differences(database, "app_")

    assert [(diff[0], diff[1].name) for diff in differences] == [("add_index", index.name)]


def test_event_ids_autoincrement(database: Database) -> None:
    upgrade(database.engine, "app_", database.schema)
    events = build_tables("app_", database.schema, database).events
    row = {"task_id": "t1", "event": "sent", "at": datetime.now(UTC), "detail": {"k": 1}}

    with database.engine.begin() as connection:
        connection.execute(insert(events), [row, row])
        ids = connection.execute(select(events.c.id).order_by(events.c.id)).scalars().all()

    assert ids == [1, 2]


def test_second_upgrade_changes_nothing_and_keeps_rows(database: Database) -> None:
    upgrade(database.engine, "app_", database.schema)
    groups = build_tables("app_", database.schema, database).groups
    now = datetime.now(UTC)
    with database.engine.begin() as connection:
        connection.execute(insert(groups), {"group_id": "g1", "created_at": now})

    upgrade(database.engine, "app_", database.schema)

    with database.engine.connect() as connection:
        assert connection.execute(select(groups.c.group_id)).scalars().all() == ["g1"]
    assert current(database.engine, "app_", database.schema) == head()
    assert schema_differences(database, "app_") == []


def test_two_prefixes_coexist_in_one_schema(database: Database) -> None:
    upgrade(database.engine, "one_", database.schema)
    upgrade(database.engine, "two_", database.schema)

    expected = {f"{p}{t}" for p in ("one_", "two_") for t in (*TABLES, "alembic_version")}
    assert table_names(database) == expected
    for prefix in ("one_", "two_"):
        assert current(database.engine, prefix, database.schema) == head()
        assert schema_differences(database, prefix) == []


def test_downgrade_to_base_drops_the_tables_of_that_prefix_only(database: Database) -> None:
    upgrade(database.engine, "one_", database.schema)
    upgrade(database.engine, "two_", database.schema)

    with database.engine.begin() as connection:
        command.downgrade(make_config(connection, "one_", database.schema), "base")

    assert current(database.engine, "one_", database.schema) is None
    assert table_names(database) == {
        "one_alembic_version",
        *(f"two_{t}" for t in (*TABLES, "alembic_version")),
    }


def test_upgrading_a_0001_store_drops_the_workers_table_and_keeps_every_result(
    database: Database,
) -> None:
    upgrade(database.engine, "app_", database.schema, revision="0001")
    assert "app_workers" in table_names(database)
    results = build_tables("app_", database.schema, database).results
    now = datetime.now(UTC)
    with database.engine.begin() as connection:
        connection.execute(
            insert(results), {"task_id": "t1", "state": "SUCCESS", "updated_at": now}
        )

    upgrade(database.engine, "app_", database.schema)

    assert "app_workers" not in table_names(database)
    assert schema_differences(database, "app_") == []
    with database.engine.connect() as connection:
        assert connection.execute(select(results.c.task_id)).scalars().all() == ["t1"]
    with database.engine.begin() as connection:
        command.downgrade(make_config(connection, "app_", database.schema), "0001")
    assert "app_workers" in table_names(database)


def test_migrations_log_nothing_below_warning_unless_asked(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        upgrade(database.engine, "quiet_", database.schema)
    assert [r for r in caplog.records if r.name.startswith("alembic")] == []

    with caplog.at_level(logging.INFO):
        upgrade(database.engine, "loud_", database.schema, quiet=False)
    assert any("Running upgrade" in r.getMessage() for r in caplog.records)


def test_a_worker_at_info_logs_no_alembic_lines(
    start_worker: StartWorker, backend_env: dict[str, str]
) -> None:
    """``celery worker -l INFO`` on an empty result store imports Alembic and migrates on first
    use, in its main process and in its pool's child: none of Alembic's INFO lines (its plugin
    set-up on import, each migration step) reach the worker's log."""
    # every line names its logger, so Alembic's lines are known by where they come from
    log_format = {"worker_log_format": "%(levelname)s %(processName)s %(name)s: %(message)s"}
    worker = start_worker(
        app="tests.backend_app",
        env={**backend_env, "TQ_TEST_EXTRA_CONF": json.dumps(log_format)},
        concurrency=1,
    ).wait_ready()
    client = make_app(backend_env)
    try:
        result = client.send_task("bk.add", (2, 3))
        assert result.get(timeout=30) == 5
    finally:
        client.close()
    wait_for(
        lambda: f"{result.id}] succeeded" in worker.log_text(),
        timeout=10,
        message=lambda: f"the worker logged no success; log tail:\n{worker.log_tail()}",
    )

    lines = worker.log_text().splitlines()
    assert any(line.startswith("INFO MainProcess celery.") for line in lines), worker.log_tail()
    assert [line for line in lines if re.match(r"\w+ \S+ alembic[.:]", line)] == []


# -- several processes migrating the same database at once ---------------------------------------

_start_together: Any = None


def _remember_barrier(barrier: Any) -> None:
    global _start_together
    _start_together = barrier


def _upgrade_at_the_same_moment(url: str, prefix: str, schema: str | None) -> str | None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        _start_together.wait(timeout=20)
        upgrade(engine, prefix, schema)
        return current(engine, prefix, schema)
    finally:
        engine.dispose()


def test_processes_upgrading_at_once_all_succeed(database: Database) -> None:
    # two apps (prefixes), two processes each, into a schema that does not exist yet
    jobs = [("one_", database.schema), ("one_", database.schema)]
    jobs += [("two_", database.schema), ("two_", database.schema)]
    spawn = get_context("spawn")
    barrier = spawn.Barrier(len(jobs))
    with ProcessPoolExecutor(
        len(jobs), mp_context=spawn, initializer=_remember_barrier, initargs=(barrier,)
    ) as pool:
        futures = [pool.submit(_upgrade_at_the_same_moment, database.url, *job) for job in jobs]
        revisions = [future.result(timeout=30) for future in futures]

    assert revisions == [head()] * len(jobs)
    for prefix in ("one_", "two_"):
        assert schema_differences(database, prefix) == []


def test_threads_of_one_process_migrate_different_prefixes_at_once(postgres: Database) -> None:
    prefixes = [f"p{n}_" for n in range(4)]
    barrier = threading.Barrier(len(prefixes))

    def migrate(prefix: str) -> str | None:
        engine = create_engine(postgres.url, poolclass=NullPool)
        try:
            barrier.wait(timeout=20)
            upgrade(engine, prefix, postgres.schema)
            return current(engine, prefix, postgres.schema)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(len(prefixes)) as pool:
        revisions = list(pool.map(migrate, prefixes, timeout=30))

    assert revisions == [head()] * len(prefixes)
    assert len(table_names(postgres)) == len(prefixes) * (len(TABLES) + 1)


def test_without_schema_postgresql_uses_the_search_path(postgres: Database) -> None:
    with postgres.engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{postgres.schema}"'))
    engine = create_engine(
        postgres.url,
        poolclass=NullPool,
        connect_args={"options": f"-csearch_path={postgres.schema}"},
    )
    try:
        upgrade(engine, "app_", None)
        assert current(engine, "app_", None) == head()
    finally:
        engine.dispose()

    assert "app_results" in table_names(postgres)


# -- the command line ----------------------------------------------------------------------------


def taskqueue(*args: str, cwd: Path = REPO_ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TASKQUEUE), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_upgrades_and_reports_the_revision(postgres: Database) -> None:
    where = ["--url", f"tq+{postgres.url}", "--prefix", "cli_", "--schema", str(postgres.schema)]

    first = taskqueue("db", "upgrade", *where)
    again = taskqueue("db", "upgrade", *where)
    shown = taskqueue("db", "current", *where)

    assert first.returncode == 0, first.stderr
    assert f"upgraded from (no tables) to revision {head()}" in first.stdout
    assert again.returncode == 0, again.stderr
    assert f"already at revision {head()}; nothing to do" in again.stdout
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"{head()} (head)"
    assert current(postgres.engine, "cli_", postgres.schema) == head()


def test_cli_reads_database_url_from_the_environment(sqlite: Database) -> None:
    done = taskqueue("db", "upgrade", DATABASE_URL=sqlite.url)

    assert done.returncode == 0, done.stderr
    assert current(sqlite.engine, "tq_", None) == head()


def test_cli_reads_the_celery_apps_settings(sqlite: Database, tmp_path: Path) -> None:
    (tmp_path / "cli_app.py").write_text(
        "from celery import Celery\n"
        "app = Celery('cli_app')\n"
        f"app.conf.update(result_backend='tq+{sqlite.url}', taskqueue_table_prefix='fromapp_')\n"
    )

    done = taskqueue("-A", "cli_app", "db", "upgrade", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert current(sqlite.engine, "fromapp_", None) == head()


def test_cli_explains_a_url_it_cannot_use() -> None:
    done = taskqueue("db", "current", "--url", "not a url")

    assert done.returncode != 0
    assert "'not a url' is not a database URL" in done.stderr
