"""Control-plane benchmark: the REST API served by ``taskqueue control-plane`` (gunicorn, 2
processes x 8 threads) over a loaded result store and dead-letter queue, and Flower answering
the same questions from its memory, under an open-loop load from a second process.

    python bench/control_plane.py [--tasks 1000000] [--events 5000000] [--dead 100000]

Loaded: ``--tasks`` result rows and ``--events`` history rows in PostgreSQL (``DATABASE_URL``,
a schema the run creates and drops), spread over the last 24 hours — twenty task names, five
queues, eight workers, one task in twenty failed; ``--dead`` dead letters in a dedicated
redis-server. Measured at ``--rate`` requests/s for ``--seconds`` each (p50/p99 from the
moment each request was due, after a warm-up sending each path once), then the highest rate
(of a fixed ladder, each rung tried at most twice) whose p99 stays under 50 ms with no errors;
at ``--rate`` it also prints what one request cost in CPU: the control plane's processes,
PostgreSQL's and the Redis server's (``--only TEXT`` runs the endpoints whose name holds it):

- ``GET /api/v1/tasks/{id}`` (random ids), ``GET /api/v1/tasks?state=FAILURE&name=…`` (two
  filters), ``GET /api/v1/dlq`` (first page over every entry), ``GET /metrics``, and
  ``GET /healthz``, which reads nothing: the floor the HTTP server and Flask set;
- Flower (``--flower-tasks`` tasks run by a real worker with events, then held in Flower's
  memory; its default keeps 10,000): ``/api/task/info/{id}``, ``/api/tasks?state=FAILURE&
  taskname=…&limit=50``, ``/metrics``, ``/healthcheck``. Flower has no dead-letter queue.

The load generator and the servers share the machine's cores; figures are for this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import requests
import sqlalchemy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import wait_until  # noqa: E402
from bench.costs import redis_cpu_seconds, server_cpu_seconds, worker_cpu_seconds  # noqa: E402
from control_plane.auth import new_token  # noqa: E402
from taskqueue_backend.backend.migrate import upgrade  # noqa: E402
from taskqueue_backend.backend.partitions import HistoryPartitions, Policy  # noqa: E402
from taskqueue_backend.backend.schema import tables_for  # noqa: E402
from taskqueue_backend.embedded import EmbeddedRedis, free_port  # noqa: E402

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NAMES, QUEUES, WORKERS = 20, 5, 8
LADDER = (200, 300, 400, 500, 600, 800, 1000, 1300, 1600, 2000)
TARGET_P99_MS = 50.0
#: requests/s of the warm-up, which sends every path of an endpoint once
WARM_RATE = 250.0

RESULTS_SQL = """
INSERT INTO {t}results (task_id, state, name, args, kwargs, result, content_type,
    content_encoding, exception_type, exception_message, worker, retries, queue, sent_at,
    received_at, started_at, finished_at, updated_at)
SELECT lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0'),
       CASE WHEN i % 20 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
       'bench.task_' || ((i * 7 + i / 20) % {names}),
       convert_to('[' || i || ', "item-' || i || '"]', 'UTF8'), convert_to('{{}}', 'UTF8'),
       CASE WHEN i % 20 = 0 THEN NULL ELSE convert_to(i::text, 'UTF8') END,
       'application/json', 'utf-8',
       CASE WHEN i % 20 = 0 THEN 'ValueError' END,
       CASE WHEN i % 20 = 0 THEN 'boom ' || i END,
       'celery@worker-' || (i % {workers}), 0, 'queue-' || (i % {queues}),
       t, t + interval '5 ms', t + interval '6 ms', t + interval '40 ms', t + interval '40 ms'
FROM (SELECT i, now() - i * interval '1 ms' * {step_ms} AS t
      FROM generate_series(1, {tasks}) AS i) AS g
"""

EVENTS_SQL = """
INSERT INTO {t}task_events (task_id, event, state, at, worker, detail)
SELECT lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0'),
       (ARRAY['sent', 'received', 'started', 'retried',
              CASE WHEN i % 20 = 0 THEN 'failed' ELSE 'succeeded' END])[k + 1],
       (ARRAY['PENDING', 'RECEIVED', 'STARTED', 'RETRY',
              CASE WHEN i % 20 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END])[k + 1],
       now() - i * interval '1 ms' * {step_ms} + k * interval '10 ms',
       CASE WHEN k > 0 THEN 'celery@worker-' || (i % {workers}) END,
       CASE WHEN k = 0 THEN '{{"actor": "bench"}}'::json END
FROM (SELECT (j - 1) / 5 + 1 AS i, (j - 1) % 5 AS k
      FROM generate_series(1, {events}) AS j) AS g
"""


def task_id(i: int) -> str:
    return f"{i:08x}-0000-4000-8000-{i:012x}"


def load_store(db_url: str, schema: str, tasks: int, events: int) -> None:
    engine = sqlalchemy.create_engine(db_url)
    upgrade(engine, "tq_", schema)
    # the partitions of the last day and the week ahead exist before the rows arrive, as in
    # production (else the server's first request would adopt 5M rows from the default one)
    tables = tables_for("postgresql", "tq_", schema)
    HistoryPartitions(engine, tables, Policy()).maintain(now=datetime.now(UTC) - timedelta(days=1))
    step_ms = 24 * 3600 * 1000 / tasks
    names = {"t": f'"{schema}".tq_', "names": NAMES, "queues": QUEUES, "workers": WORKERS,
             "step_ms": step_ms, "tasks": tasks, "events": events}  # fmt: skip
    for what, sql in (("result rows", RESULTS_SQL), ("history rows", EVENTS_SQL)):
        started = time.monotonic()
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("SET LOCAL synchronous_commit = off"))
            conn.execute(sqlalchemy.text(sql.format(**names)))
        print(f"  loaded {tasks if what == 'result rows' else events:,} {what} in "
              f"{time.monotonic() - started:.0f} s")  # fmt: skip
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sqlalchemy.text(f'VACUUM ANALYZE "{schema}".tq_results'))
        conn.execute(sqlalchemy.text(f'VACUUM ANALYZE "{schema}".tq_task_events'))
        # the load's dirty pages are written now, not by a checkpoint during the measurements
        conn.execute(sqlalchemy.text("CHECKPOINT"))
    engine.dispose()


def load_dead_letters(redis_url: str, prefix: str, count: int) -> None:
    """``count`` failed tasks stored as dead letters the way a worker stores them."""
    import logging

    from kombu import Connection

    logging.getLogger("taskqueue_backend").setLevel(logging.ERROR)  # one warning per entry
    started = time.monotonic()
    with Connection(redis_url, transport="taskqueue_backend.transport:Transport",
                    transport_options={"global_keyprefix": prefix}) as conn:  # fmt: skip
        channel: Any = conn.default_channel
        for i in range(count):
            ident, name, queue = str(uuid.uuid4()), f"bench.task_{i % NAMES}", f"queue-{i % 5}"
            envelope = {
                "body": json.dumps([[i], {}, {"callbacks": None, "errbacks": None,
                                              "chain": None, "chord": None}]),
                "content-encoding": "utf-8", "content-type": "application/json",
                "headers": {"lang": "py", "task": name, "id": ident, "root_id": ident,
                            "parent_id": None, "retries": 0, "argsrepr": f"({i},)",
                            "kwargsrepr": "{}"},
                "properties": {"correlation_id": ident, "delivery_mode": 2, "priority": 0,
                               "delivery_info": {"exchange": "", "routing_key": queue}},
            }  # fmt: skip
            channel.bury_rebuilt(
                queue,
                envelope,
                {
                    "reason": "failed",
                    "detail": "raised",
                    "worker": f"celery@worker-{i % 8}",
                    "exc_type": ("ValueError", "KeyError", "TimeoutError")[i % 3],
                    "exc_message": f"boom {i}",
                    "traceback": "Traceback ...",
                    "task_id": ident,
                },
            )
    print(f"  stored {count:,} dead letters in {time.monotonic() - started:.0f} s")


def measure(url: str, paths: list[str], rate: float, seconds: float,
            token: str | None = None) -> dict[str, Any]:  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(paths))
    command = [sys.executable, str(ROOT / "bench" / "http_load.py"), url, "--paths",
               listing.name, "--rate", str(rate), "--seconds", str(seconds)]  # fmt: skip
    if token:
        command.append(f"--token={token}")  # a token may begin with "-"
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=True,
                              timeout=seconds * 4 + 60)  # fmt: skip
    finally:
        os.unlink(listing.name)
    return dict(json.loads(done.stdout))


def highest_rate(url: str, paths: list[str], seconds: float, token: str | None) -> float:
    """The highest rate of the ladder with p99 under the target, no errors, and kept up."""
    best = 0.0
    for rate in LADDER:
        # a rung is tried twice before the ladder stops: one pause of the shared machine
        # (another process, the page cache) does not decide the result
        if not any(kept_up(measure(url, paths, rate, seconds, token), rate) for _ in (1, 2)):
            break
        best = rate
    return best


def kept_up(found: dict[str, Any], rate: float) -> bool:
    return (not found["errors"] and found["p99_ms"] < TARGET_P99_MS
            and found["achieved_rate"] >= 0.95 * rate)  # fmt: skip


def wait_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    def answering() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"benchmark: the server exited:\n{log.read_text()[-3000:]}")
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.ConnectionError:
            return False

    wait_until(answering, 60, url)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def bench_control_plane(args: argparse.Namespace, redis_url: str, prefix: str, db_url: str,
                        schema: str, out: Path) -> dict[str, dict[str, Any]]:  # fmt: skip
    secret, entry = new_token("bench", "viewer")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQ_BROKER_URL": redis_url,
           "TQ_BROKER_KEYPREFIX": prefix, "TQ_DATABASE_URL": db_url, "TQ_DB_SCHEMA": schema,
           "TQ_API_TOKENS": entry}  # fmt: skip
    log = out / "control-plane.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "taskqueue"), "control-plane", "--bind",
             f"127.0.0.1:{port}", "--workers", "2", "--threads", "8", "--no-access-log"],
            env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    rng = random.Random(7)
    endpoints = {
        "GET /api/v1/tasks/{id}": [f"/api/v1/tasks/{task_id(rng.randint(1, args.tasks))}"
                                   for _ in range(5000)],
        "GET /api/v1/tasks (2 filters)": [f"/api/v1/tasks?state=FAILURE&name=bench.task_{k}"
                                          for k in range(NAMES)],
        f"GET /api/v1/dlq ({args.dead:,} entries)": ["/api/v1/dlq"],
        "GET /metrics": ["/metrics"],
        # no dependency, no data: what the HTTP server and Flask cost a request by themselves
        "GET /healthz (the floor)": ["/healthz"],
    }  # fmt: skip
    try:
        wait_serving(url + "/healthz", server, log)
        meter = CpuMeter(server.pid, redis.Redis.from_url(redis_url))
        return run_endpoints(url, endpoints, args, secret, meter)
    finally:
        stop(server)


class CpuMeter:
    """CPU seconds so far of the control plane's processes, PostgreSQL and Redis."""

    def __init__(self, server_pid: int, redis_client: redis.Redis) -> None:
        self.server_pid, self.redis = server_pid, redis_client

    def now(self) -> tuple[float, float, float]:
        return (worker_cpu_seconds(self.server_pid), server_cpu_seconds("postgres"),
                redis_cpu_seconds(self.redis))  # fmt: skip

    def per_request(self, before: tuple[float, float, float], requests: int) -> dict[str, float]:
        spent = [(b - a) * 1e6 / max(1, requests) for a, b in zip(before, self.now(), strict=True)]
        return dict(zip(("server_cpu_us", "postgres_cpu_us", "redis_cpu_us"), spent, strict=True))


def run_endpoints(url: str, endpoints: dict[str, list[str]], args: argparse.Namespace,
                  token: str | None, meter: CpuMeter) -> dict[str, dict[str, Any]]:  # fmt: skip
    found: dict[str, dict[str, Any]] = {}
    for name, paths in endpoints.items():
        if args.only not in name:
            continue
        # warm up: connections, prepared plans, and every page the paths read (each path once)
        measure(url, paths, WARM_RATE, max(2.0, len(paths) / WARM_RATE), token)
        before = meter.now()
        row = measure(url, paths, args.rate, args.seconds, token)
        row.update(meter.per_request(before, row["requests"]))
        row["highest_rate"] = highest_rate(url, paths, args.ladder_seconds, token)
        found[name] = row
        print(f"  {name}: p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms at "
              f"{args.rate:.0f}/s (errors {row['errors'] or 'none'}); CPU per request: server "
              f"{row['server_cpu_us']:.0f} µs, PostgreSQL {row['postgres_cpu_us']:.0f} µs, "
              f"Redis {row['redis_cpu_us']:.0f} µs; highest rate with p99 < "
              f"{TARGET_P99_MS:.0f} ms: {row['highest_rate']:.0f}/s")  # fmt: skip
    return found


def bench_flower(args: argparse.Namespace, redis_url: str, out: Path) -> dict[str, Any]:
    prefix = f"bench-flower-{uuid.uuid4().hex[:6]}:"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_REDIS_URL": redis_url,
           "BENCH_KEYPREFIX": prefix, "FLOWER_UNAUTHENTICATED_API": "true"}  # fmt: skip
    port = free_port()
    celery = [sys.executable, "-m", "celery", "-A", "bench.control_plane_app"]
    flower_log, worker_log = out / "flower.log", out / "worker-flower.log"
    with flower_log.open("wb") as sink:
        flower = subprocess.Popen(
            [*celery, "flower", "--address=127.0.0.1", f"--port={port}"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url + "/healthcheck", flower, flower_log)
        with worker_log.open("wb") as sink:
            worker = subprocess.Popen(
                [
                    *celery,
                    "worker",
                    "-E",
                    "-l",
                    "WARNING",
                    "-c",
                    "2",
                    "-Q",
                    "bench",
                    "--without-gossip",
                    "--without-mingle",
                ],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        sys.modules.pop("bench.control_plane_app", None)
        os.environ.update(BENCH_REDIS_URL=redis_url, BENCH_KEYPREFIX=prefix)
        from bench.control_plane_app import app

        ids = []
        with app.producer_or_acquire() as producer:
            for i in range(1, args.flower_tasks + 1):
                sent = app.send_task(
                    f"bench.task_{(i * 7 + i // 20) % NAMES}", (i,), producer=producer
                )
                ids.append(sent.id)

        def seen_all() -> bool:
            tasks = requests.get(url + "/api/tasks", params={"limit": args.flower_tasks * 2},
                                 timeout=30).json()  # fmt: skip
            return sum(t["state"] in ("SUCCESS", "FAILURE") for t in tasks.values()) >= \
                len(ids)  # fmt: skip

        wait_until(seen_all, 600, "Flower to see every task finish")
        stop(worker)
        app.close()
        rng = random.Random(7)
        endpoints = {
            "GET /api/v1/tasks/{id}": [f"/api/task/info/{rng.choice(ids)}" for _ in range(5000)],
            "GET /api/v1/tasks (2 filters)": [
                f"/api/tasks?state=FAILURE&taskname=bench.task_{k}&limit=50"
                for k in range(NAMES)],
            "GET /metrics": ["/metrics"],
            "GET /healthz (the floor)": ["/healthcheck"],
        }  # fmt: skip
        return run_endpoints(url, endpoints, args, None,
                             CpuMeter(flower.pid, redis.Redis.from_url(redis_url)))  # fmt: skip
    finally:
        stop(flower)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--ladder-seconds", type=float, default=5)
    parser.add_argument("--flower-tasks", type=int, default=10_000, help="0: skip Flower")
    parser.add_argument("--only", default="", help="run the endpoints whose name holds this")
    args = parser.parse_args()
    db_url = os.environ.get("DATABASE_URL", DEFAULT_DB)
    schema = f"tq_bench_cp_{uuid.uuid4().hex[:8]}"
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(db_url)
    results: dict[str, Any] = {"settings": vars(args)}
    try:
        with EmbeddedRedis() as server:
            prefix = "bench-cp:"
            print(f"benchmark: redis-server on port {server.port}; PostgreSQL schema {schema}")
            load_store(db_url, schema, args.tasks, args.events)
            load_dead_letters(server.url, prefix, args.dead)
            print("taskqueue control plane:")
            results["taskqueue"] = bench_control_plane(args, server.url, prefix, db_url,
                                                       schema, out)  # fmt: skip
            if args.flower_tasks:
                print(f"Flower ({args.flower_tasks:,} tasks in memory):")
                results["flower"] = bench_flower(args, server.url, out)
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()
    report(results, args)
    (out / "control_plane.json").write_text(json.dumps(results, indent=2))


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    ours, flower = results["taskqueue"], results.get("flower", {})
    print(f"\nat {args.rate:.0f} requests/s:")
    print(f"{'':40} {'p50 ms':>8} {'p99 ms':>8} {'max rate/s':>11} {'CPU µs':>7} "
          f"{'Flower p99':>11} {'Flower max':>11}")  # fmt: skip
    for name, row in ours.items():
        theirs = flower.get(name)
        cpu = row["server_cpu_us"] + row["postgres_cpu_us"] + row["redis_cpu_us"]
        print(f"{name:40} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} {row['highest_rate']:11.0f} "
              f"{cpu:7.0f} " + (f"{theirs['p99_ms']:11.1f} {theirs['highest_rate']:11.0f}"
                                if theirs else f"{'-':>11} {'-':>11}"))  # fmt: skip
    print("CPU µs: per request at that rate, the control plane's, PostgreSQL's and Redis's")
    for name, row in ours.items():
        theirs = flower.get(name)
        if theirs and theirs["highest_rate"]:
            rates = row["highest_rate"] / theirs["highest_rate"]
            p99s = row["p99_ms"] / theirs["p99_ms"]
            print(f"{name}: highest rate vs Flower {rates:.2f}x, p99 at {args.rate:.0f}/s vs "
                  f"Flower {p99s:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
