"""The history at scale on PostgreSQL: partitioned by time, partitions made ahead, rows without
a partition kept in the default one, retention by dropping whole partitions, result expiry in
batches, the migration from the flat table keeping every row; SQLite keeps the flat table.

Every PostgreSQL test works in a schema of its own (``pg_schema``, dropped afterwards) on
``$DATABASE_URL`` (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, event, insert, select, text
from sqlalchemy.pool import NullPool

from taskqueue_backend.backend.migrate import current, head, make_config, upgrade
from taskqueue_backend.backend.opening import open_store
from taskqueue_backend.backend.partitions import HistoryPartitions, Policy
from taskqueue_backend.backend.periods import Period
from taskqueue_backend.backend.queries import Store, event_row
from taskqueue_backend.backend.schema import build_tables, tables_for
from taskqueue_backend.backend.settings import BackendSettings
from tests.support import wait_for

TASKQUEUE = Path(sys.executable).parent / "taskqueue"
NOW = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # a Monday


@pytest.fixture
def pg(database_url: str | None, pg_schema: str) -> Iterator[tuple[Engine, str]]:
    assert database_url is not None
    engine = create_engine(database_url, poolclass=NullPool)
    yield engine, pg_schema
    engine.dispose()


def where_rows_are(engine: Engine, schema: str) -> dict[str, int]:
    """How many history rows each partition holds."""
    with engine.connect() as conn:
        rows = conn.execute(text(f'SELECT tableoid::regclass::text, count(*) FROM '
                                 f'"{schema}".tq_task_events GROUP BY 1')).all()  # fmt: skip
    return {name.split(".")[-1].strip('"'): n for name, n in rows}


def partition_names(engine: Engine, schema: str) -> list[str]:
    tables = tables_for("postgresql", "tq_", schema)
    with engine.begin() as conn:
        return [p.name for p in HistoryPartitions(engine, tables).partitions(conn)]


def history_rows(engine: Engine, schema: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return conn.execute(text(f'SELECT id, task_id, event, state, at, worker, detail::text '
                                 f'FROM "{schema}".tq_task_events ORDER BY id')).all()  # fmt: skip


def insert_history(engine: Engine, schema: str, rows: list[tuple[str, datetime]]) -> None:
    events = build_tables("tq_", schema).events
    with engine.begin() as conn:
        conn.execute(insert(events), [{"task_id": t, "event": "received", "state": "RECEIVED",
                                       "at": at, "detail": {"n": i}}
                                      for i, (t, at) in enumerate(rows)])  # fmt: skip


# -- the table ------------------------------------------------------------------------------------


def test_postgresql_history_is_partitioned_by_time_with_the_time_in_its_key(
    pg: tuple[Engine, str],
) -> None:
    engine, schema = pg
    upgrade(engine, "tq_", schema)

    with engine.connect() as conn:
        kind, key = conn.execute(text(
            "SELECT c.relkind, pg_get_partkeydef(c.oid) FROM pg_class c "
            "WHERE c.oid = to_regclass(:t)"),
            {"t": f'"{schema}".tq_task_events'}).one()  # fmt: skip
        primary = conn.execute(text(
            "SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_constraint c "
            "CROSS JOIN unnest(c.conkey) WITH ORDINALITY k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
            "WHERE c.conrelid = to_regclass(:t) AND c.contype = 'p'"),
            {"t": f'"{schema}".tq_task_events'}).scalar()  # fmt: skip

    assert (kind, key) == ("p", "RANGE (at)")
    assert primary == ["id", "at"]
    assert partition_names(engine, schema) == ["tq_task_events_default"]


def test_sqlite_keeps_the_flat_table_and_its_history_works(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'results.db'}"
    settings = BackendSettings(history_retention=3 * 86400, cleanup_batch_size=2)
    store = open_store(url, settings)
    for age in (0, 1, 5, 6, 7):
        at = datetime.now(UTC) - timedelta(days=age, minutes=1)
        store.write({"task_id": f"t{age}", "state": "SUCCESS", "updated_at": at},
                    [event_row(f"t{age}", "succeeded", "SUCCESS", "w1", None, at)])  # fmt: skip

    with store.engine.connect() as conn:
        sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'tq_task_events'"))
        ddl = sql.scalar()
    report = store.partitions.maintain()

    assert "PRIMARY KEY (id)" in ddl and "PARTITION" not in ddl.upper()
    assert [r.event for r in store.history("t1")] == ["succeeded"]
    assert report.partitioned is False
    assert report.deleted_rows == 3  # in batches of two: 2 + 1
    assert store.history("t5") == [] and [r.task_id for r in store.history("t0")] == ["t0"]


# -- the migration from the flat table ----------------------------------------------------------


def test_upgrading_a_flat_history_keeps_every_row_and_id_and_downgrading_too(
    pg: tuple[Engine, str],
) -> None:
    engine, schema = pg
    upgrade(engine, "tq_", schema, revision="0003")
    now = datetime.now(UTC)
    old = [(f"task-{i}", now - timedelta(days=i % 40, hours=i % 24)) for i in range(200)]
    insert_history(engine, schema, old)
    before = history_rows(engine, schema)

    upgrade(engine, "tq_", schema)

    assert current(engine, "tq_", schema) == head()
    assert history_rows(engine, schema) == before
    kept_in = where_rows_are(engine, schema)
    assert len(kept_in) == 1 and next(iter(kept_in)).startswith("tq_task_events_before_")
    store = open_store(str(engine.url), BackendSettings(schema=schema), migrate=False)
    assert [(r.id, r.event) for r in store.history("task-7")] == [
        (r[0], r[2]) for r in before if r[1] == "task-7"
    ]
    store.write(None, [event_row("task-new", "received", "RECEIVED", "w1", None)])
    newest = history_rows(engine, schema)[-1]
    assert newest[1] == "task-new" and newest[0] == before[-1][0] + 1

    with engine.begin() as conn:
        command.downgrade(make_config(conn, "tq_", schema), "0003")

    with engine.connect() as conn:
        kind = conn.execute(text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"),
                            {"t": f'"{schema}".tq_task_events'}).scalar()  # fmt: skip
    assert kind == "r"
    assert history_rows(engine, schema) == [*before, newest]
    insert_history(engine, schema, [("after-downgrade", now)])
    assert history_rows(engine, schema)[-1][0] == newest[0] + 1
    upgrade(engine, "tq_", schema)
    assert len(history_rows(engine, schema)) == len(before) + 2


def test_a_key_index_built_beforehand_becomes_the_old_tables_key_instead_of_a_new_one(
    pg: tuple[Engine, str],
) -> None:
    engine, schema = pg
    upgrade(engine, "tq_", schema, revision="0003")
    insert_history(engine, schema, [(f"t{i}", datetime.now(UTC)) for i in range(50)])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE UNIQUE INDEX CONCURRENTLY tq_task_events_id_at '
                          f'ON "{schema}".tq_task_events (id, at)'))  # fmt: skip
        built = conn.execute(text("SELECT to_regclass(:i)::oid"),
                             {"i": f'"{schema}".tq_task_events_id_at'}).scalar()  # fmt: skip

    upgrade(engine, "tq_", schema)

    with engine.connect() as conn:
        keys = conn.execute(text(
            "SELECT i.indexrelid FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indrelid "
            "WHERE h.inhparent = to_regclass(:t) AND i.indisprimary "
            "AND i.indrelid::regclass::text LIKE '%before%'"),
            {"t": f'"{schema}".tq_task_events'}).scalars().all()  # fmt: skip
    assert keys == [built]  # the old table's key is the index built beforehand
    assert len(history_rows(engine, schema)) == 50


def test_the_history_notification_fires_on_the_partitioned_table(pg: tuple[Engine, str]) -> None:
    engine, schema = pg
    upgrade(engine, "tq_", schema, revision="0003")
    insert_history(engine, schema, [("old", datetime.now(UTC))])
    upgrade(engine, "tq_", schema)
    import psycopg

    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute("LISTEN taskqueue_events")
        insert_history(engine, schema, [("new", datetime.now(UTC))])
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]

    assert payloads == [f"{schema}.tq_task_events"]


# -- partitions ahead, and rows that have none ----------------------------------------------


def analyzed(engine: Engine, schema: str) -> set[str]:
    """The history partitions ANALYZE has run on."""
    query = text(
        "SELECT relname FROM pg_stat_user_tables WHERE schemaname = :s AND relname "
        "LIKE 'tq_task_events_p%' AND last_analyze IS NOT NULL"
    )
    with engine.connect() as conn:
        return set(conn.execute(query, {"s": schema}).scalars())


def test_a_row_without_a_partition_is_kept_in_the_default_one_until_maintenance_moves_it(
    pg: tuple[Engine, str],
) -> None:
    engine, schema = pg
    upgrade(engine, "tq_", schema)
    store = Store(engine, tables_for("postgresql", "tq_", schema))
    now = datetime.now(UTC)
    store.write({"task_id": "t1", "state": "SUCCESS", "updated_at": now},
                [event_row("t1", "succeeded", "SUCCESS", "w1", None, now)])  # fmt: skip
    later = now + timedelta(days=30)
    store.write(None, [event_row("t2", "received", "RECEIVED", "w1", None, later)])
    assert where_rows_are(engine, schema) == {"tq_task_events_default": 2}

    report = HistoryPartitions(engine, store.tables, Policy(ahead=2)).maintain()

    today = Period.DAILY.start_of(now)
    assert report.created == [f"tq_task_events_p{today + timedelta(days=d):%Y%m%d}"
                              for d in range(3)]  # fmt: skip
    assert report.adopted_rows == 1 and report.default_rows == 1
    assert where_rows_are(engine, schema) == {
        f"tq_task_events_p{today:%Y%m%d}": 1, "tq_task_events_default": 1}  # fmt: skip
    assert [r.event for r in store.history("t1")] == ["succeeded"]
    # the partition that took a row has statistics (the planner's guess for a lookup by id
    # is not thousands of rows); the empty ones ahead need none yet
    assert analyzed(engine, schema) == {f"tq_task_events_p{today:%Y%m%d}"}

    # the period of the waiting row comes within reach: it gets a partition and its row
    report = HistoryPartitions(engine, store.tables, Policy(ahead=1)).maintain(now=later)
    assert report.adopted_rows == 1 and report.default_rows == 0
    assert f"tq_task_events_p{Period.DAILY.start_of(later):%Y%m%d}" in report.created


def test_writes_going_on_while_the_current_partition_is_made_all_succeed(
    pg: tuple[Engine, str],
) -> None:
    """The first maintenance after an upgrade makes the partition of now while workers write
    into its range: no write fails (a row routed to the default partition as the partition
    is attached would violate its constraint) and none is lost."""
    engine, schema = pg
    upgrade(engine, "tq_", schema)
    store = Store(engine, tables_for("postgresql", "tq_", schema))
    stop = threading.Event()
    errors: list[BaseException] = []
    written: list[int] = []

    def write(worker: int) -> None:
        n = 0
        while not stop.is_set() or n < 20:
            task = f"w{worker}-{n}"
            now = datetime.now(UTC)
            try:
                store.write({"task_id": task, "state": "SUCCESS", "updated_at": now},
                            [event_row(task, "succeeded", "SUCCESS", "w", None, now)])  # fmt: skip
            except BaseException as exc:
                errors.append(exc)
                return
            n += 1
        written.append(n)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: where_rows_are(engine, schema).get("tq_task_events_default", 0) > 40)
    report = HistoryPartitions(engine, store.tables, Policy(ahead=1)).maintain()
    today = f"tq_task_events_p{Period.DAILY.start_of(datetime.now(UTC)):%Y%m%d}"
    wait_for(lambda: where_rows_are(engine, schema).get(today, 0) > report.adopted_rows,
             message="no new row in the new partition")  # fmt: skip
    stop.set()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert report.adopted_rows > 40 and len(report.created) == 2
    kept = where_rows_are(engine, schema)
    assert "tq_task_events_default" not in kept and sum(kept.values()) == sum(written)


def test_weekly_and_monthly_partitions_fill_around_the_existing_ones(
    pg: tuple[Engine, str],
) -> None:
    engine, schema = pg
    upgrade(engine, "tq_", schema)
    tables = tables_for("postgresql", "tq_", schema)
    HistoryPartitions(engine, tables, Policy(Period.DAILY, ahead=1)).maintain(now=NOW)

    weekly = HistoryPartitions(engine, tables, Policy(Period.WEEKLY, ahead=1)).maintain(now=NOW)
    monthly = HistoryPartitions(engine, tables, Policy(Period.MONTHLY, ahead=1))
    made = monthly.maintain(now=NOW)

    # days 7 and 8 exist: the week of the 7th is finished by a piece from the 9th
    assert weekly.created == ["tq_task_events_p20261209", "tq_task_events_p20261214"]
    assert made.created == ["tq_task_events_p20261201", "tq_task_events_p20261221",
                            "tq_task_events_p20270101"]  # fmt: skip
    with engine.begin() as conn:
        spans = [(p.bounds.lower, p.bounds.upper) for p in monthly.partitions(conn)
                 if not p.is_default]  # fmt: skip
    assert spans[0][0] == datetime(2026, 12, 1, tzinfo=UTC)
    assert spans[-1][1] == datetime(2027, 2, 1, tzinfo=UTC)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # no gap, no overlap


def test_the_backend_makes_the_partitions_ahead_when_it_opens_and_again_when_due(
    database_url: str, pg_schema: str
) -> None:
    settings = BackendSettings(schema=pg_schema, history_partitions_ahead=3)
    store = open_store(database_url, settings)
    today = Period.DAILY.start_of(datetime.now(UTC))
    expected = [f"tq_task_events_p{today + timedelta(days=d):%Y%m%d}" for d in range(4)]
    assert partition_names(store.engine, pg_schema) == [*expected, "tq_task_events_default"]

    with store.engine.begin() as conn:
        conn.execute(text(f'DROP TABLE "{pg_schema}"."{expected[-1]}"'))
    assert store.keeper is not None
    store.keeper._due = 0.0  # the hourly check is due
    store.write(None, [event_row("t1", "received", "RECEIVED", "w1", None)])

    wait_for(lambda: expected[-1] in partition_names(store.engine, pg_schema), timeout=10,
             message="the partition dropped was not made again")  # fmt: skip


# -- retention ---------------------------------------------------------------------------------


def test_retention_drops_whole_partitions_and_keeps_the_rest(pg: tuple[Engine, str]) -> None:
    engine, schema = pg
    upgrade(engine, "tq_", schema)
    tables = tables_for("postgresql", "tq_", schema)
    ten_days_ago = NOW - timedelta(days=10)
    HistoryPartitions(engine, tables, Policy(ahead=11)).maintain(now=ten_days_ago)
    rows = [(f"t{d}-{h}", NOW - timedelta(days=d, hours=h)) for d in range(10) for h in (0, 6)]
    rows.append(("too-old", NOW - timedelta(days=60)))  # no partition: the default one
    insert_history(engine, schema, rows)

    policy = Policy(ahead=1, retention=timedelta(days=3), batch_size=1)
    report = HistoryPartitions(engine, tables, policy).maintain(now=NOW)

    cutoff = NOW - timedelta(days=3)  # 4 December, 12:30
    assert report.cutoff == cutoff
    assert report.dropped == [f"tq_task_events_p202611{d}" for d in (27, 28, 29, 30)] + [
        f"tq_task_events_p202612{d:02}" for d in (1, 2, 3)]  # fmt: skip
    assert report.deleted_rows == 1  # from the default partition, row by row
    with engine.connect() as conn:
        gone = conn.execute(text("SELECT to_regclass(:t)"),
                            {"t": f'"{schema}".tq_task_events_p20261203'}).scalar()  # fmt: skip
    assert gone is None
    kept = {r[1] for r in history_rows(engine, schema)}
    # the 4th's partition is kept whole: a row lives at least the retention, at most a day more
    assert kept == {task for task, at in rows if at >= datetime(2026, 12, 4, tzinfo=UTC)}
    assert "t3-6" in kept and min(at for task, at in rows if task in kept) < cutoff


def test_a_drop_that_would_wait_for_a_long_reader_is_postponed_not_queued(
    pg: tuple[Engine, str],
) -> None:
    engine, schema = pg
    upgrade(engine, "tq_", schema)
    tables = tables_for("postgresql", "tq_", schema)
    HistoryPartitions(engine, tables, Policy(ahead=2)).maintain(now=NOW - timedelta(days=2))
    policy = Policy(ahead=1, retention=timedelta(days=1), lock_timeout=0.2)

    with engine.connect() as reader:
        reader.execute(text(f'SELECT count(*) FROM "{schema}".tq_task_events'))  # a long read
        report = HistoryPartitions(engine, tables, policy).maintain(now=NOW)
        # attaching locks the default partition, dropping the whole table: both would wait
        assert report.created == [] and report.dropped == []
        assert report.postponed == ["making tq_task_events_p20261208",
                                    "dropping tq_task_events_p20261205"]  # fmt: skip
        reader.rollback()

    report = HistoryPartitions(engine, tables, policy).maintain(now=NOW)
    assert report.created == ["tq_task_events_p20261208"]
    assert report.dropped == ["tq_task_events_p20261205"] and report.postponed == []


# -- result expiry --------------------------------------------------------------------------------


def results_table(store: Store) -> str:
    table = store.tables.results
    return f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "postgresql":
        url = request.getfixturevalue("database_url")
        schema = request.getfixturevalue("pg_schema")
    else:
        url, schema = f"sqlite:///{tmp_path / 'results.db'}", None
    return open_store(url, BackendSettings(schema=schema, cleanup_batch_size=10))


def test_result_expiry_deletes_in_batches_of_short_transactions(store: Store) -> None:
    now = datetime.now(UTC)
    for i in range(40):
        finished = now - timedelta(hours=2 if i < 35 else 0)
        store.write({"task_id": f"t{i:02}", "state": "SUCCESS", "finished_at": finished,
                     "updated_at": finished}, [])  # fmt: skip
    onlooker = create_engine(store.engine.url, poolclass=NullPool)
    committed: list[int] = []  # results left, as another connection sees them, before each batch

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "DELETE" in statement.upper() and "tq_results" in statement:
            with onlooker.connect() as other:
                count = other.execute(text(f"SELECT count(*) FROM {results_table(store)}"))
                committed.append(int(count.scalar() or 0))

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        removed = store.cleanup(now - timedelta(hours=1))
    finally:
        event.remove(store.engine, "before_cursor_execute", before)
        onlooker.dispose()

    assert removed == 35
    # four batches of at most ten, each committed before the next begins
    assert committed == [40, 30, 20, 10]
    with store.engine.connect() as conn:
        left = conn.execute(select(store.tables.results.c.task_id)).scalars().all()
    assert sorted(left) == [f"t{i}" for i in range(35, 40)]


def test_result_expiry_skips_a_row_being_written_instead_of_waiting(
    database_url: str, pg_schema: str
) -> None:
    store = open_store(database_url, BackendSettings(schema=pg_schema, cleanup_batch_size=3))
    old = datetime.now(UTC) - timedelta(days=2)
    for i in range(7):
        store.write({"task_id": f"t{i}", "state": "SUCCESS", "finished_at": old,
                     "updated_at": old}, [])  # fmt: skip
    r = store.tables.results
    with store.engine.connect() as writer:
        writer.execute(select(r.c.task_id).where(r.c.task_id == "t0").with_for_update())
        with store.engine.connect() as conn:
            conn.execute(text("SET lock_timeout = '2s'"))  # a wait would fail the test
            conn.commit()
        removed = store.cleanup(datetime.now(UTC))
        writer.rollback()

    assert removed == 6
    assert [row.task_id for row in store.read_many([f"t{i}" for i in range(7)])] == ["t0"]


def test_celery_backend_cleanup_expires_results_and_applies_the_retention(
    database_url: str, pg_schema: str
) -> None:
    from celery import Celery

    app = Celery("cleanup", set_as_current=False)
    app.conf.update(result_backend=f"tq+{database_url}", taskqueue_db_schema=pg_schema,
                    result_expires=3600, taskqueue_history_retention=timedelta(days=2),
                    broker_url="memory://")  # fmt: skip
    store = app.backend.store
    now = datetime.now(UTC)
    HistoryPartitions(store.engine, store.tables, Policy(ahead=6)).maintain(
        now=now - timedelta(days=5)
    )
    old = now - timedelta(days=4)
    store.write({"task_id": "old", "state": "SUCCESS", "finished_at": old, "updated_at": old},
                [event_row("old", "succeeded", "SUCCESS", "w1", None, old)])  # fmt: skip
    store.write({"task_id": "new", "state": "SUCCESS", "finished_at": now, "updated_at": now},
                [event_row("new", "succeeded", "SUCCESS", "w1", None, now)])  # fmt: skip

    app.tasks["celery.backend_cleanup"].run()  # its body, as beat has a worker run it

    assert [row.task_id for row in store.read_many(["old", "new"])] == ["new"]
    assert store.history("old") == [] and len(store.history("new")) == 1
    old_partition = f"tq_task_events_p{Period.DAILY.start_of(old):%Y%m%d}"
    assert old_partition not in partition_names(store.engine, pg_schema)
    app.close()


# -- the command line ---------------------------------------------------------------------------


def taskqueue(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TASKQUEUE), *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=os.environ.copy())  # fmt: skip


def test_cli_maintain_makes_partitions_and_drops_those_past_the_retention(
    pg: tuple[Engine, str], database_url: str
) -> None:
    engine, schema = pg
    where = ["--url", f"tq+{database_url}", "--schema", schema]
    upgraded = taskqueue("db", "upgrade", *where)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "made 8 history partition(s) ahead" in upgraded.stdout
    tables = tables_for("postgresql", "tq_", schema)
    HistoryPartitions(engine, tables, Policy(ahead=1)).maintain(
        now=datetime.now(UTC) - timedelta(days=6)
    )
    insert_history(engine, schema, [("old", datetime.now(UTC) - timedelta(days=6)),
                                    ("new", datetime.now(UTC))])  # fmt: skip

    done = taskqueue("db", "maintain", *where, "--retention", "3d", "--ahead", "10", "--json")

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    today = Period.DAILY.start_of(datetime.now(UTC))
    assert report["created"] == [f"tq_task_events_p{today + timedelta(days=d):%Y%m%d}"
                                 for d in (8, 9, 10)]  # fmt: skip
    assert len(report["dropped"]) == 2 and report["schema"] == schema
    assert [r[1] for r in history_rows(engine, schema)] == ["new"]

    again = taskqueue("db", "maintain", *where, "--retention", "3d", "--ahead", "10")
    assert again.returncode == 0, again.stderr
    assert "made: (none)" in again.stdout and "dropped: (none)" in again.stdout
    assert "daily, 10 ahead" in again.stdout


def test_cli_maintain_reads_the_apps_settings(
    pg: tuple[Engine, str], database_url: str, tmp_path: Path
) -> None:
    engine, schema = pg
    (tmp_path / "maint_app.py").write_text(
        "from celery import Celery\n"
        "app = Celery('maint_app')\n"
        f"app.conf.update(result_backend='tq+{database_url}', taskqueue_db_schema='{schema}',\n"
        "                taskqueue_history_partition='monthly',\n"
        "                taskqueue_history_partitions_ahead=2)\n"
    )
    upgrade(engine, "tq_", schema)

    done = taskqueue("-A", "maint_app", "db", "maintain", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "monthly, 2 ahead; history kept for ever" in done.stdout
    names = partition_names(engine, schema)
    assert len(names) == 4 and names[-1] == "tq_task_events_default"


def test_cli_maintain_refuses_a_bad_duration_and_a_missing_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'results.db'}"
    bad = taskqueue("db", "maintain", "--url", url, "--retention", "soon")
    missing = taskqueue("db", "maintain", "--url", url)

    assert bad.returncode != 0 and "'soon' is not a duration" in bad.stderr
    assert missing.returncode != 0 and "no tables yet" in missing.stderr
