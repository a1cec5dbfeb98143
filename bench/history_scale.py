"""History at scale, on real rows: the partitioned history against the flat table it replaces
(revision 0003), with the same rows, in one run.

    python bench/history_scale.py [--rows 3000000] [--days 10] [--repeat 40]

Two schemas get the same generated history (``--rows`` rows: received, started and an outcome
per task, spread over ``--days`` days up to now) and results (one per task). Then, for each:
the control plane's hot queries (a task's history by id, the overview's last hour by minute,
the live feed's next page, the newest id) by their median time over ``--repeat`` runs; a state
write's median time; retention of the oldest day (a DROP of its partition against a DELETE of
its rows); result expiry of the oldest half (batches against one DELETE, with the longest
transaction of each); and the upgrade of the flat table to the partitioned one (attached, not
copied). Ratios are partitioned / flat. PostgreSQL comes from ``DATABASE_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); the schemas are dropped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, text
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from taskqueue_backend.backend import listing  # noqa: E402
from taskqueue_backend.backend.expiry import expire  # noqa: E402
from taskqueue_backend.backend.migrate import upgrade  # noqa: E402
from taskqueue_backend.backend.partitions import HistoryPartitions, Policy  # noqa: E402
from taskqueue_backend.backend.queries import Store, event_row  # noqa: E402
from taskqueue_backend.backend.schema import build_tables, tables_for  # noqa: E402

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def generate(engine: Any, schema: str, tasks: int, days: int, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{schema}"'))
        params = {"tasks": tasks, "now": now, "span": days * 86400}
        conn.execute(text("""
            CREATE TEMP TABLE tasks ON COMMIT DROP AS
            SELECT 'task-' || md5(t::text) AS task_id, t,
                   CAST(:now AS timestamptz) - (1 - t::float / :tasks) * :span * interval '1 s'
                       AS at
            FROM generate_series(1, :tasks) AS t"""), params)  # fmt: skip
        conn.execute(text("""
            INSERT INTO tq_task_events (task_id, event, state, at, worker, detail)
            SELECT task_id, e.event, e.state, at + e.after * interval '1 s',
                   'worker-' || (t % 8) || '@host', CAST('{"queue": "celery"}' AS json)
            FROM tasks CROSS JOIN LATERAL (VALUES
                ('received', 'RECEIVED', 0.0), ('started', 'STARTED', 0.1),
                (CASE WHEN t % 20 = 0 THEN 'failed' ELSE 'succeeded' END,
                 CASE WHEN t % 20 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END, 0.5)
            ) AS e(event, state, after) ORDER BY at"""))  # fmt: skip
        conn.execute(text("""
            INSERT INTO tq_results (task_id, state, name, queue, worker, sent_at, received_at,
                                    started_at, finished_at, updated_at)
            SELECT task_id, CASE WHEN t % 20 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
                   'proj.tasks.job_' || (t % 12), 'queue_' || (t % 3),
                   'worker-' || (t % 8) || '@host', at, at, at + interval '0.1 s',
                   at + interval '0.5 s', at + interval '0.5 s'
            FROM tasks"""))  # fmt: skip
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'VACUUM ANALYZE "{schema}".tq_task_events'))
        conn.execute(text(f'VACUUM ANALYZE "{schema}".tq_results'))


def median_ms(run: Callable[[], Any], repeat: int) -> float:
    run()  # warm the cache and the connection
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = run()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", DEFAULT_DB).removeprefix("tq+")
    engine = create_engine(url, poolclass=NullPool)
    pooled = create_engine(url, pool_size=2)  # the stores' queries: a warm connection
    tag = uuid.uuid4().hex[:6]
    flat_schema, parted_schema = f"bench_flat_{tag}", f"bench_parted_{tag}"
    tasks = args.rows // 3
    now = datetime.now(UTC)
    try:
        upgrade(engine, "tq_", flat_schema, revision="0003")
        upgrade(engine, "tq_", parted_schema)
        parted = Store(pooled, tables_for("postgresql", "tq_", parted_schema))
        flat = Store(pooled, build_tables("tq_", flat_schema))
        HistoryPartitions(engine, parted.tables, Policy(ahead=args.days + 7)).maintain(
            now=now - timedelta(days=args.days)
        )
        for schema in (flat_schema, parted_schema):
            seconds, _ = timed(lambda s=schema: generate(engine, s, tasks, args.days, now))
            print(f"generated {tasks * 3:,} history rows and {tasks:,} results in {schema} "
                  f"({seconds:.0f} s)")  # fmt: skip
        ids = [f"task-{hashlib.md5(str(random.randint(1, tasks)).encode()).hexdigest()}"
               for _ in range(args.repeat)]  # fmt: skip
        newest = listing.last_event_id(parted)
        hour_ago = datetime.now(UTC) - timedelta(hours=1)
        queries: dict[str, Callable[[Store], Any]] = {
            "task history by id": lambda s: s.read_with_history(random.choice(ids)),
            "last hour by minute": lambda s: listing.event_timeline(
                s, ["received", "succeeded", "failed"], hour_ago, 60, 60.0),
            "live feed next page": lambda s: listing.events_after(s, newest - 300),
            "newest history id": lambda s: listing.last_event_id(s),
        }  # fmt: skip
        print(f"\n{'query (median ms)':<28}{'flat':>10}{'partitioned':>14}{'ratio':>8}")
        for name, query in queries.items():
            a = median_ms(lambda q=query: q(flat), args.repeat)
            b = median_ms(lambda q=query: q(parted), args.repeat)
            print(f"{name:<28}{a:>10.2f}{b:>14.2f}{b / a:>7.2f}x")

        def state_write(store: Store) -> Callable[[], None]:
            def run() -> None:
                task = f"bench-{uuid.uuid4().hex}"
                at = datetime.now(UTC)
                store.write({"task_id": task, "state": "SUCCESS", "finished_at": at,
                             "updated_at": at},
                            [event_row(task, "succeeded", "SUCCESS", "w1", None, at)])  # fmt: skip

            return run

        a = median_ms(state_write(flat), args.repeat * 25)
        b = median_ms(state_write(parted), args.repeat * 25)
        print(f"{'state write':<28}{a:>10.2f}{b:>14.2f}{b / a:>7.2f}x")

        # retention of the oldest day and a half: drop their partitions / delete their rows
        oldest = now - timedelta(days=args.days)
        day = oldest.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        cut = day + timedelta(days=1)
        e = flat.tables.events

        def delete_flat() -> int:
            with pooled.begin() as conn:
                return int(conn.execute(delete(e).where(e.c.at < cut)).rowcount)

        a, deleted = timed(delete_flat)
        policy = Policy(ahead=0, retention=now - cut)
        b, report = timed(lambda: HistoryPartitions(engine, parted.tables, policy).maintain(
            now=now, retention=True))  # fmt: skip
        print(f"\nretention of the oldest {deleted:,} rows (a day and a half): DELETE "
              f"{a * 1000:.0f} ms (and as many dead rows left for VACUUM) / maintenance "
              f"dropping {len(report.dropped)} partitions {b * 1000:.0f} ms: "
              f"{b / a:.3f}x")  # fmt: skip

        # result expiry of the oldest half: one DELETE against batches of 1000
        half = now - timedelta(days=args.days / 2)
        r = flat.tables.results

        def one_delete() -> int:
            with pooled.begin() as conn:
                return int(conn.execute(delete(r).where(r.c.finished_at < half)).rowcount)

        a, gone = timed(one_delete)
        batches: list[float] = []

        def note(conn: Any, *_: Any) -> None:
            batches.append(time.perf_counter())

        event.listen(pooled, "commit", note)
        start = time.perf_counter()
        b, gone_b = timed(lambda: expire(parted, half, 1000))
        event.remove(pooled, "commit", note)
        longest = max(y - x for x, y in zip([start, *batches], batches, strict=False))
        print(f"result expiry of {gone:,} results: one DELETE {a:.2f} s (one transaction) / "
              f"{len(batches)} batches {b:.2f} s in all, the longest {longest * 1000:.0f} ms "
              f"({gone_b:,} results)")  # fmt: skip

        # the upgrade of the flat table: attached, not copied
        with engine.connect() as conn:
            rows = conn.execute(text(f'SELECT count(*) FROM "{flat_schema}".tq_task_events'))
            count = rows.scalar()
        seconds, _ = timed(lambda: upgrade(engine, "tq_", flat_schema))
        print(f"upgrade 0003 -> 0004 of a {count:,}-row history: {seconds:.1f} s")
    finally:
        pooled.dispose()
        with engine.begin() as conn:
            for schema in (flat_schema, parted_schema):
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


if __name__ == "__main__":
    main()
