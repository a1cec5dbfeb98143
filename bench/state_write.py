"""What one task's state write costs its server: this backend's on PostgreSQL beside stock's
Redis backend, and the floors under each.

    python bench/state_write.py [--writes 2000] [--rounds 2]

Each variant makes ``--writes`` writes one after another, each waiting for its reply, as a
worker's pool process does, and prints the server's CPU per write (PostgreSQL: its server and
backends; Redis: ``INFO cpu`` of a dedicated redis-server) and the wall time per write:

- a prepared ``SELECT 1`` and a ``PING``: the price of a round trip alone;
- a durable one-row ``INSERT`` into a two-column table: the floor of any write that commits
  durably, one transaction per task;
- this backend's state write of a finished task (its result row, three history rows and the
  NOTIFY that wakes ``get()``), one per transaction as a worker writes it, then 4 and 16 in
  one transaction (what group commit would save if writes queued up), and with
  ``synchronous_commit`` off (what durability costs);
- stock Celery's Redis backend storing the same result (``result_extended``): a ``SETEX`` and
  a ``PUBLISH`` in one ``MULTI``.

PostgreSQL comes from ``DATABASE_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/
test``), in a schema the run creates and drops; nothing else may write to it meanwhile, since
every ``postgres`` process's CPU is counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import redis
import sqlalchemy
from celery import Celery, states
from celery.app.task import Context

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backend import DEFAULT_DB  # noqa: E402
from bench.costs import redis_cpu_seconds, server_cpu_seconds  # noqa: E402
from taskqueue_backend import lifecycle  # noqa: E402
from taskqueue_backend.backend.queries import event_row  # noqa: E402
from taskqueue_backend.clock import utcnow  # noqa: E402
from taskqueue_backend.embedded import EmbeddedRedis  # noqa: E402

WARM_UP = 100

Write = Callable[[], Any]


def finished_task() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A finished no-op task's result row and history, as a worker's state write holds them."""
    task_id, now = str(uuid.uuid4()), utcnow()
    row = {
        "task_id": task_id, "state": "SUCCESS", "result": b"1", "children": b"[]",
        "content_type": "application/json", "content_encoding": "utf-8",
        "name": "benchb.noop", "args": b"[]", "kwargs": b"{}", "worker": "celery@bench",
        "retries": 0, "queue": "bench", "received_at": now, "started_at": now,
        "finished_at": now, "updated_at": now,
    }  # fmt: skip
    events = [
        event_row(task_id, event, state, "celery@bench", None, now + timedelta(microseconds=i))
        for i, (event, state) in enumerate(
            (
                (lifecycle.RECEIVED, states.RECEIVED),
                (lifecycle.STARTED, states.STARTED),
                (lifecycle.SUCCEEDED, states.SUCCESS),
            )
        )
    ]
    return row, events


class Postgres:
    """The PostgreSQL variants, in a schema of their own."""

    def __init__(self, db_url: str) -> None:
        self.schema = f"tq_bench_{uuid.uuid4().hex[:8]}"
        self.engine = sqlalchemy.create_engine(db_url)
        with self.engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{self.schema}"'))
        conninfo = self.engine.url.set(drivername="postgresql")
        self.plain = psycopg.connect(conninfo.render_as_string(hide_password=False),
                                     autocommit=True)  # fmt: skip
        self.plain.execute(f'CREATE TABLE "{self.schema}".floor (id text PRIMARY KEY, v bytea)')
        self.app = self._app(db_url, durable=True)
        self.lax = self._app(db_url, durable=False)

    def _app(self, db_url: str, durable: bool) -> Celery:
        app = Celery("bench_state_write")
        app.conf.update(result_backend="tq+" + db_url, result_extended=True,
                        taskqueue_db_schema=self.schema,
                        taskqueue_synchronous_commit=durable)  # fmt: skip
        app.backend.store  # noqa: B018 - opens the store (tables made) before timing
        return app

    def variants(self) -> dict[str, tuple[Write, int]]:
        """Each variant's write and how many tasks one write holds."""
        floor = f'INSERT INTO "{self.schema}".floor VALUES (%s, %s)'

        def together(n: int) -> Write:
            return lambda: self.app.backend.store.write_together(
                [finished_task() for _ in range(n)]
            )

        return {
            "PostgreSQL: SELECT 1 (a round trip)": (
                lambda: self.plain.execute("SELECT 1", prepare=True), 1),
            "PostgreSQL: durable one-row INSERT (the floor)": (
                lambda: self.plain.execute(floor, (uuid.uuid4().hex, b"x"), prepare=True), 1),
            "this backend: state write, 1 per transaction": (
                lambda: self.app.backend.store.write(*finished_task()), 1),
            "this backend: 4 state writes per transaction": (together(4), 4),
            "this backend: 16 state writes per transaction": (together(16), 16),
            "this backend: state write, synchronous_commit off": (
                lambda: self.lax.backend.store.write(*finished_task()), 1),
        }  # fmt: skip

    def close(self) -> None:
        for app in (self.app, self.lax):
            app.backend.store.engine.dispose()
            app.close()
        self.plain.close()
        with self.engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.engine.dispose()


def redis_variants(url: str) -> dict[str, tuple[Write, int]]:
    app = Celery("bench_state_write_stock")
    app.conf.update(result_backend=url, result_extended=True)
    request = Context(task="benchb.noop", args=[], kwargs={}, hostname="celery@bench",
                      delivery_info={"routing_key": "bench"}, retries=0)  # fmt: skip
    client = redis.Redis.from_url(url)

    def stock_write() -> None:
        app.backend.store_result(str(uuid.uuid4()), 1, "SUCCESS", request=request)

    return {
        "Redis: PING (a round trip)": (client.ping, 1),
        "stock Redis backend: store_result": (stock_write, 1),
    }


def cost(
    write: Write, per_write: int, writes: int, server: Callable[[], float]
) -> tuple[float, float]:
    """Server CPU µs and wall µs per task of ``writes`` tasks written by ``write``."""
    calls = max(writes // per_write, 1)
    for _ in range(WARM_UP):
        write()
    cpu, started = server(), time.perf_counter()
    for _ in range(calls):
        write()
    wall = time.perf_counter() - started
    tasks = calls * per_write
    return (server() - cpu) * 1e6 / tasks, wall * 1e6 / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    found: dict[str, list[tuple[float, float]]] = {}
    postgres = Postgres(os.environ.get("DATABASE_URL", DEFAULT_DB))
    try:
        with EmbeddedRedis() as server:
            redis_cpu = partial(redis_cpu_seconds, redis.Redis.from_url(server.url))
            postgres_cpu = partial(server_cpu_seconds, "postgres")
            print(
                f"benchmark: PostgreSQL schema {postgres.schema}; redis-server on port "
                f"{server.port}; {args.writes} tasks per variant, {args.rounds} rounds"
            )
            chosen = [
                (name, write, n, postgres_cpu) for name, (write, n) in postgres.variants().items()
            ]
            chosen += [
                (name, write, n, redis_cpu)
                for name, (write, n) in redis_variants(server.url).items()
            ]
            for _ in range(args.rounds):
                for name, write, n, meter in chosen:
                    found.setdefault(name, []).append(cost(write, n, args.writes, meter))
    finally:
        postgres.close()
    medians = {name: (statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs))
               for name, runs in found.items()}  # fmt: skip
    print(f"{'per task (median of rounds)':52} {'server CPU µs':>14} {'wall µs':>9}")
    for name, (cpu, wall) in medians.items():
        print(f"{name:52} {cpu:14.0f} {wall:9.0f}")
    ours = medians["this backend: state write, 1 per transaction"][0]
    stock = medians["stock Redis backend: store_result"][0]
    floor = medians["PostgreSQL: durable one-row INSERT (the floor)"][0]
    print(
        f"server CPU of this backend's write over stock Redis's: {ours / stock:.1f}x; "
        f"PostgreSQL's durable floor over stock Redis's write: {floor / stock:.1f}x"
    )


if __name__ == "__main__":
    main()
