"""The control plane's hot queries stay index scans, and time ranges prune partitions, when the
planner believes the history holds 100 million rows (and the results 20 million).

Generating 100 million rows would take far longer than the whole suite, so this test does what
the planner allows instead, on a throwaway database of its own:

1. real data: 60,000 tasks over the last ten days (180,000 history rows in ten daily
   partitions, 60,000 results), written through the real schema, then ``VACUUM ANALYZE`` so
   every column has real statistics (distinct counts, most common values, histograms);
2. the scale: as superuser, each history partition's and each of its indexes'
   ``pg_class.reltuples`` is multiplied so the history totals 100 million rows (the results
   and their indexes, 20 million). The planner scales ``reltuples`` by the relation's actual
   size on disk, so it now estimates 100 million rows, while the files keep their real, small
   size: a sequential scan is costed *lower* than it would be at 100 million real rows (its
   pages are few), so a plan that still picks an index scan here would pick it at full size;
3. each hot query is captured as the control plane sends it (the operations layer's and the
   store's own statements and parameters, recorded as they run) and ``EXPLAIN (FORMAT JSON)``
   is asserted on: no sequential scan of any partition or table the planner believes holds
   more than ``SMALL`` rows, and a time-bounded query touches no partition wholly before its
   range. The planner's estimate of the whole history is checked too (the scale took).

Nothing is timed here; ``bench/history_scale.py`` times the same queries on real rows.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from taskqueue_backend.backend import listing
from taskqueue_backend.backend.migrate import upgrade
from taskqueue_backend.backend.opening import open_store
from taskqueue_backend.backend.partitions import HistoryPartitions, Policy
from taskqueue_backend.backend.queries import Store, event_row
from taskqueue_backend.backend.settings import BackendSettings
from taskqueue_backend.operations import Operations
from taskqueue_backend.operations.stats import task_stats, task_timeline
from taskqueue_backend.operations.tasks import TaskQuery

HISTORY_ROWS = 100_000_000
RESULT_ROWS = 20_000_000
TASKS = 60_000
DAYS = 10
#: a relation the planner believes this small may be read whole (an empty partition ahead)
SMALL = 1000
INDEXED = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


@pytest.fixture(scope="module")
def scaled(database_url: str | None) -> Iterator[Store]:
    """A store on a throwaway database whose history the planner believes has 100M rows."""
    if database_url is None:
        pytest.skip("no PostgreSQL available (set DATABASE_URL)")
    server = create_engine(database_url, poolclass=NullPool,
                           isolation_level="AUTOCOMMIT")  # fmt: skip
    name = f"tq_plans_{uuid.uuid4().hex[:10]}"
    with server.connect() as conn:
        if not conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))\
                .scalar():  # fmt: skip
            pytest.skip("scaling the planner's statistics needs a PostgreSQL superuser")
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(False)
    engine = create_engine(url, poolclass=NullPool)
    try:
        now = datetime.now(UTC)
        upgrade(engine, "tq_", None)
        store = open_store(url, BackendSettings(auto_migrate=False))
        HistoryPartitions(engine, store.tables, Policy(ahead=DAYS + 7)).maintain(
            now=now - timedelta(days=DAYS)
        )
        _generate(engine, now)
        _scale(engine)
        yield store
    finally:
        engine.dispose()
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def _generate(engine: Engine, now: datetime) -> None:
    """60,000 tasks over ten days: received, started, then succeeded (one in twenty failed)."""
    with engine.begin() as conn:
        ours = text("SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'tq_%'")
        for (relname,) in conn.execute(ours):
            conn.execute(text(f'ALTER TABLE "{relname}" SET (autovacuum_enabled = false)'))
        params = {"tasks": TASKS, "now": now, "span": DAYS * 86400}
        conn.execute(text("""
            CREATE TEMP TABLE tasks AS
            SELECT 'task-' || md5(t::text) AS task_id, t,
                   CAST(:now AS timestamptz) - (1 - t::float / :tasks) * :span * interval '1 s'
                       AS at
            FROM generate_series(1, :tasks) AS t"""), params)  # fmt: skip
        conn.execute(text("""
            INSERT INTO tq_task_events (task_id, event, state, at, worker, detail)
            SELECT task_id, e.event, e.state, at + e.after * interval '1 s',
                   'worker-' || (t % 8) || '@host', NULL
            FROM tasks CROSS JOIN LATERAL (VALUES
                ('received', 'RECEIVED', 0.0), ('started', 'STARTED', 0.1),
                (CASE WHEN t % 20 = 0 THEN 'failed' ELSE 'succeeded' END,
                 CASE WHEN t % 20 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END, 0.5)
            ) AS e(event, state, after)"""))  # fmt: skip
        conn.execute(text("""
            INSERT INTO tq_results (task_id, state, name, queue, worker, sent_at, received_at,
                                    started_at, finished_at, updated_at)
            SELECT task_id, CASE WHEN t % 20 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
                   'proj.tasks.job_' || (t % 12), 'queue_' || (t % 3),
                   'worker-' || (t % 8) || '@host', at, at, at + interval '0.1 s',
                   at + interval '0.5 s', at + interval '0.5 s'
            FROM tasks"""))  # fmt: skip
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def _scale(engine: Engine) -> None:
    """Multiply reltuples of the history's partitions and indexes (and the results')."""
    with engine.begin() as conn:
        history = conn.execute(text("SELECT sum(reltuples) FROM pg_class c JOIN pg_inherits i "
                                    "ON i.inhrelid = c.oid WHERE i.inhparent = "
                                    "'tq_task_events'::regclass")).scalar()  # fmt: skip
        results = conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = "
                                    "'tq_results'::regclass")).scalar()  # fmt: skip
        scale = text("""
            UPDATE pg_class SET reltuples = reltuples * :factor
            WHERE oid = ANY(CAST(:tables AS regclass[])) OR oid IN (
                SELECT indexrelid FROM pg_index WHERE indrelid = ANY(CAST(:tables AS regclass[])))
        """)  # fmt: skip
        partitions = [r[0] for r in conn.execute(text(
            "SELECT inhrelid::regclass::text FROM pg_inherits "
            "WHERE inhparent = 'tq_task_events'::regclass"))]  # fmt: skip
        conn.execute(scale, {"factor": HISTORY_ROWS / history,
                             "tables": ["tq_task_events", *partitions]})  # fmt: skip
        conn.execute(scale, {"factor": RESULT_ROWS / results, "tables": ["tq_results"]})


# -- reading plans ---------------------------------------------------------------------------------


def captured_selects(store: Store, run: Callable[[], Any]) -> list[tuple[str, Any]]:
    """The SELECTs ``run`` sent, with their parameters, as the database received them: through
    the engine, and through the store's direct connection (a task's result, its row and
    history)."""
    found: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            found.append((statement, parameters))

    direct: Any = store._direct
    read = direct.read

    def recorded(sql: str, params: dict[str, Any]) -> Any:
        found.append((sql, params))
        return read(sql, params)

    event.listen(store.engine, "before_cursor_execute", before)
    direct.read = recorded
    try:
        run()
    finally:
        event.remove(store.engine, "before_cursor_execute", before)
        del direct.read
    assert found, "the call sent no query"
    return found


def plans(store: Store, run: Callable[[], Any]) -> list[dict[str, Any]]:
    found = []
    with store.engine.connect() as conn:
        for statement, parameters in captured_selects(store, run):
            explained = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            found.append(explained.scalar()[0]["Plan"])
    return found


def scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "Relation Name" in plan:
        yield plan
    for child in plan.get("Plans", []):
        yield from scans(child)


def believed_rows(store: Store) -> dict[str, float]:
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT relname, reltuples FROM pg_class "
                                 "WHERE relname LIKE 'tq_%' AND relkind = 'r'")).all()  # fmt: skip
    return {str(name): float(n) for name, n in rows}


def assert_no_large_sequential_scan(store: Store, plan: dict[str, Any]) -> list[str]:
    """Every scan of a relation believed larger than ``SMALL`` uses an index; the relations
    scanned."""
    sizes = believed_rows(store)
    scanned = []
    for node in scans(plan):
        relation = node["Relation Name"]
        scanned.append(relation)
        if sizes.get(relation, 0) > SMALL:
            assert node["Node Type"] in INDEXED, (
                f"{node['Node Type']} on {relation} ({sizes[relation]:.3g} rows): {plan}"
            )
    return scanned


def history_partitions(store: Store) -> dict[str, tuple[datetime | None, datetime | None]]:
    with store.engine.begin() as conn:
        return {p.name: (p.bounds.lower, p.bounds.upper)
                for p in store.partitions.partitions(conn)}  # fmt: skip


def overlapping(
    partitions: dict[str, tuple[datetime | None, datetime | None]], low: datetime, high: datetime
) -> set[str]:
    """The regular partitions holding some time of ``[low, high]``."""
    return {
        name
        for name, (lower, upper) in partitions.items()
        if lower is not None and upper is not None and lower <= high and upper > low
    }


def assert_pruned_to(scanned: set[str], store: Store, low: datetime, high: datetime) -> None:
    """``scanned`` is every partition of ``[low, high]`` and no other (give or take a minute
    at either end: the query's own clock read differs from the test's)."""
    partitions, minute = history_partitions(store), timedelta(minutes=1)
    assert overlapping(partitions, low + minute, high - minute) <= scanned, scanned
    assert scanned <= overlapping(partitions, low - minute, high + minute), scanned


# -- the hot queries ------------------------------------------------------------------------------


def test_the_planner_believes_the_history_holds_100_million_rows(scaled: Store) -> None:
    with scaled.engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) SELECT * FROM tq_task_events")\
            .scalar()[0]["Plan"]  # fmt: skip
    assert plan["Plan Rows"] == pytest.approx(HISTORY_ROWS, rel=0.01)
    assert len(history_partitions(scaled)) >= DAYS + 7


def task_id(t: int) -> str:
    return "task-" + hashlib.md5(str(t).encode()).hexdigest()


def test_a_task_and_its_history_by_id_are_index_scans(scaled: Store) -> None:
    ops = Operations(None, scaled)
    found = plans(scaled, lambda: ops.tasks.status(task_id(TASKS // 2)))
    found += plans(scaled, lambda: ops.tasks.history(task_id(TASKS // 3)))

    partitions = sorted(history_partitions(scaled))
    scanned = [assert_no_large_sequential_scan(scaled, plan) for plan in found]
    # the status reads the row and the history in one statement, the history call the
    # history; a task id gives no time: every partition's (task_id, at) index is probed once
    assert scanned[0].count("tq_results") == 1 and scanned[-1].count("tq_results") == 0, scanned
    for relations in scanned:
        history = sorted(r for r in relations if r != "tq_results")
        assert relations == ["tq_results"] or history == partitions, relations


def test_a_result_and_a_group_of_results_by_id_are_index_scans(scaled: Store) -> None:
    """What ``AsyncResult.get()`` and ``GroupResult.get()`` read, on the direct connection."""
    found = plans(scaled, lambda: scaled.read(task_id(TASKS // 2)))
    found += plans(scaled, lambda: scaled.read_many([task_id(t) for t in range(0, TASKS, 97)]))
    assert len(found) == 2
    for plan in found:
        assert assert_no_large_sequential_scan(scaled, plan) == ["tq_results"]


def test_the_overview_timeline_and_stats_read_only_the_last_hours_partitions(
    scaled: Store,
) -> None:
    ops = Operations(None, scaled)
    found = plans(scaled, lambda: task_stats(ops))

    start = datetime.now(UTC) - timedelta(hours=1)
    partitions = history_partitions(scaled)
    timeline = next(p for p in found if any(
        n["Relation Name"].startswith("tq_task_events") for n in scans(p)))  # fmt: skip
    scanned = set(assert_no_large_sequential_scan(scaled, timeline))
    # the hour and the hour ahead a clock may be off: today's partition (and tomorrow's
    # near midnight); not the days before, the days ahead nor the default partition
    assert_pruned_to(scanned, scaled, start, datetime.now(UTC) + timedelta(hours=1))
    assert len(partitions) - len(scanned) >= DAYS + 6
    for plan in found:  # states by the hour, the newest stages: the results' time indexes
        assert_no_large_sequential_scan(scaled, plan)


def test_a_day_long_timeline_prunes_to_the_days_partitions(scaled: Store) -> None:
    ops = Operations(None, scaled)
    (plan,) = plans(scaled, lambda: task_timeline(ops, minutes=24 * 60, width_seconds=600))

    start = datetime.now(UTC) - timedelta(days=1)
    scanned = {n["Relation Name"] for n in scans(plan)}
    # a whole day of rows may rightly be read whole; what matters is the days not read
    assert_pruned_to(scanned, scaled, start, datetime.now(UTC) + timedelta(hours=1))
    assert len(scanned) in (2, 3)


def test_the_live_feed_and_the_metrics_fold_read_by_id(scaled: Store) -> None:
    newest = listing.last_event_id(scaled)
    runs: list[Callable[[], Any]] = [
        lambda: listing.last_event_id(scaled),
        lambda: listing.events_after(scaled, newest - 500),
        lambda: listing.events_with_ids(scaled, [newest - 3, newest - 2]),
        lambda: listing.counted_events(
            scaled, ["received", "succeeded", "failed"], newest - 1000, newest
        ),  # fmt: skip
    ]
    for run in runs:
        for plan in plans(scaled, run):
            scanned = assert_no_large_sequential_scan(scaled, plan)
            assert any(name.startswith("tq_task_events") for name in scanned)


def test_result_listings_and_id_prefixes_use_the_results_indexes(scaled: Store) -> None:
    ops = Operations(None, scaled)
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    runs: list[Callable[[], Any]] = [
        lambda: ops.tasks.search(TaskQuery(), limit=50),
        lambda: ops.tasks.search(TaskQuery(states=("FAILURE",)), limit=50),
        lambda: ops.tasks.search(TaskQuery(name="proj.tasks.job_3"), limit=50),
        lambda: ops.tasks.search(TaskQuery(queue="queue_1", since=hour_ago), limit=50),
        lambda: ops.tasks.search(TaskQuery(sort="finished_at", since=hour_ago), limit=50),
        lambda: listing.ids_starting_with(scaled, "task-ab12"),
    ]
    for run in runs:
        for plan in plans(scaled, run):
            assert assert_no_large_sequential_scan(scaled, plan) == ["tq_results"]


def test_a_workers_history_batch_checks_finished_tasks_by_index(scaled: Store) -> None:
    now = datetime.now(UTC)
    rows = [{"task_id": f"task-{i}", "state": "PENDING", "updated_at": now} for i in range(20)]
    events = [event_row(r["task_id"], "received", "RECEIVED", "w1", None, now) for r in rows]

    (plan,) = plans(scaled, lambda: scaled.write_many(rows, events))

    assert sorted(assert_no_large_sequential_scan(scaled, plan)) == sorted(
        history_partitions(scaled)
    )
