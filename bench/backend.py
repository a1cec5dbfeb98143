"""Result-backend benchmark: no backend, stock ``redis://``, stock ``db+postgresql+psycopg://``
and this backend on PostgreSQL, with the same broker and worker settings, in one run.

A fifth variant, "nothing stored", runs Celery's result path with a store that keeps nothing
(``bench/discarding_backend.py``): the floor any result backend starts from here.

    python bench/backend.py [--tasks 5000] [--probes 200]

For each it prints tasks/s (prefork, 2 processes, draining a preloaded queue) and how long
``AsyncResult.get()`` returns after the task finished (p50/p99), then the ratios; for the
database backends also, per task, the transactions committed and the rows inserted, updated
and deleted (PostgreSQL's ``pg_stat_database``, read after the worker's sessions ended; the
``get()`` probes are counted as tasks; the benchmark's own reads may be counted too). The broker
is this package's transport on a dedicated redis-server; PostgreSQL comes from
``DATABASE_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), in a
schema the run creates and drops.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import wait_until  # noqa: E402
from bench.costs import RedisSnapshot, server_cpu_seconds, worker_cpu_seconds  # noqa: E402
from taskqueue_backend.embedded import EmbeddedRedis  # noqa: E402

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Celery's result path with a store that keeps nothing: the floor of any result backend
DISCARDING = "bench.discarding_backend:DiscardingBackend"


def variants(db_url: str, redis_url: str) -> dict[str, str]:
    return {
        "none": "",
        "nothing stored": DISCARDING,
        "stock redis": redis_url.replace("/0", "/1"),
        "stock database": "db+" + db_url,
        "taskqueue": "tq+" + db_url,
        "taskqueue, synchronous_commit off": "tq+" + db_url + "#async",
    }


def environment(redis_url: str, backend: str, schema: str, tasks: int) -> dict[str, str]:
    backend, _, flavour = backend.partition("#")
    return {
        "BENCH_REDIS_URL": redis_url,
        "BENCH_RESULT_BACKEND": backend,
        "BENCH_SYNC_COMMIT": "0" if flavour == "async" else "1",
        "BENCH_DB_SCHEMA": schema,
        "BENCH_EXPECTED": str(tasks),
        "BENCH_KEYPREFIX": f"bench-{uuid.uuid4().hex[:6]}:",
    }


def database_activity(engine: sqlalchemy.Engine) -> tuple[int, int, int, int]:
    """Transactions committed and rows inserted, updated and deleted in the database so far
    (PostgreSQL's cumulative statistics; a backend's are in once it has exited)."""
    with engine.connect() as conn:
        row = conn.execute(sqlalchemy.text(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
            "WHERE datname = current_database()")).one()  # fmt: skip
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def measure(name: str, backend: str, redis_url: str, schema: str, tasks: int, probes: int,
            logdir: Path, engine: sqlalchemy.Engine) -> dict[str, float]:  # fmt: skip
    env = environment(redis_url, backend, schema, tasks)
    os.environ.update(env)
    sys.modules.pop("bench.backend_app", None)
    module = importlib.import_module("bench.backend_app")
    app, noop, probe = module.app, module.noop, module.probe
    client = redis.Redis.from_url(redis_url)
    client.delete("benchb:done", "benchb:first", "benchb:last")
    if backend:
        app.backend.get_task_meta(str(uuid.uuid4()))  # create tables / connect before timing
    with app.producer_or_acquire() as producer, producer.batch():
        for _ in range(tasks):
            noop.apply_async(producer=producer)
    activity = database_activity(engine)
    log = (logdir / f"worker-backend-{name.replace(' ', '-')}.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.backend_app", "worker", "-l", "WARNING",
         "-c", "2", "-P", "prefork", "-Q", "bench", "--without-gossip", "--without-mingle",
         "--without-heartbeat"],
        cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    result: dict[str, float] = {}
    try:
        cpu_before = (worker_cpu_seconds(worker.pid), server_cpu_seconds("postgres"),
                      RedisSnapshot.take(client).cpu)  # fmt: skip
        wait_until(lambda: client.get("benchb:last"), 900, f"{tasks} tasks ({name})")
        first, last = float(client.get("benchb:first")), float(client.get("benchb:last"))
        result["tasks_per_s"] = (tasks - 1) / (last - first)
        # start-up included for the worker; the drained tasks only (no probes yet)
        result["worker_cpu_us_per_task"] = (
            (worker_cpu_seconds(worker.pid) - cpu_before[0]) * 1e6 / tasks
        )
        result["postgres_cpu_us_per_task"] = (
            (server_cpu_seconds("postgres") - cpu_before[1]) * 1e6 / tasks
        )
        result["redis_cpu_us_per_task"] = (
            (RedisSnapshot.take(client).cpu - cpu_before[2]) * 1e6 / tasks
        )
        if backend and backend != DISCARDING:  # nothing to get() from the discarding one
            delays = []
            for _ in range(probes):
                handle = probe.delay()
                finished = handle.get(timeout=30)
                delays.append((time.time() - finished) * 1000)
            delays.sort()
            result["get_p50_ms"] = statistics.median(delays)
            result["get_p99_ms"] = delays[max(int(len(delays) * 0.99) - 1, 0)]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        app.close()
    if backend.startswith(("db+", "tq+")):  # the worker's sessions have ended: all counted
        time.sleep(1.0)
        after = database_activity(engine)
        done = tasks + probes  # the probes are tasks too
        for key, i in (("transactions", 0), ("rows_inserted", 1), ("rows_updated", 2),
                       ("rows_deleted", 3)):  # fmt: skip
            result[f"{key}_per_task"] = (after[i] - activity[i]) / done
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds over all backends; medians are reported"
    )
    args = parser.parse_args()
    db_url = os.environ.get("DATABASE_URL", DEFAULT_DB)
    schema = f"tq_bench_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    rounds: dict[str, list[dict[str, float]]] = {}
    try:
        with EmbeddedRedis() as server:
            print(
                f"benchmark: broker redis-server on port {server.port}; PostgreSQL schema "
                f"{schema}; {args.tasks} tasks, {args.probes} get() probes per backend, "
                f"{args.repeat} round(s)"
            )
            for round_number in range(1, args.repeat + 1):
                for name, backend in variants(db_url, server.url).items():
                    row = measure(name, backend, server.url, schema, args.tasks, args.probes, out,
                                  engine)  # fmt: skip
                    rounds.setdefault(name, []).append(row)
                    figures = ", ".join(f"{k}={v:.2f}" for k, v in row.items())
                    print(f"  round {round_number} {name}: {figures}")
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    results = {
        name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for name, rows in rounds.items()
    }
    print(f"medians of {args.repeat} round(s):")
    print(f"{'':36} {'tasks/s':>9} {'get p50 ms':>11} {'get p99 ms':>11}")
    for name, row in results.items():
        print(f"{name:36} {row['tasks_per_s']:9.1f} {row.get('get_p50_ms', float('nan')):11.2f} "
              f"{row.get('get_p99_ms', float('nan')):11.2f}")  # fmt: skip
    for mine in ("taskqueue", "taskqueue, synchronous_commit off"):
        for other in ("none", "nothing stored", "stock redis", "stock database"):
            ratio = results[mine]["tasks_per_s"] / results[other]["tasks_per_s"]
            print(f"{mine} tasks/s vs {other}: {ratio:.2f}x")
    (out / "backend.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
