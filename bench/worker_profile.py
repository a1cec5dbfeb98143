"""Where a worker's CPU goes per task: a solo worker draining no-op tasks under cProfile.

    python bench/worker_profile.py [--tasks 5000] [--transport taskqueue|stock] [--top 25]
                                   [--result-backend none|nothing-stored|stock-redis|...]

Preloads the tasks on a dedicated redis-server, runs ``celery worker -P solo`` (the task runs in
the consuming process, so one profile holds the whole hot path) under ``cProfile`` until every
task ran, stops it warmly, and prints the CPU per task by package (``kombu``, ``celery``,
``redis``, this package, the rest) and the functions with the most own time. With
``--result-backend`` (one of ``bench/backend.py``'s variants, its name with hyphens) the tasks
are the result-backend benchmark's (this package's broker, results extended) and store their
results there; PostgreSQL backends use
``DATABASE_URL`` in a schema the run creates and drops.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis
import sqlalchemy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backend import DEFAULT_DB, environment, variants  # noqa: E402
from bench.broker import load_app  # noqa: E402
from bench.common import wait_until  # noqa: E402
from taskqueue_backend.embedded import EmbeddedRedis  # noqa: E402

PACKAGES = (
    "taskqueue_backend",
    "kombu",
    "celery",
    "billiard",
    "redis",
    "vine",
    "json",
    "psycopg",
    "sqlalchemy",
)


def package_of(filename: str) -> str:
    for name in PACKAGES:
        if f"/{name}/" in filename:
            return name
    return "python and the rest"


def backend_url(kind: str, redis_url: str, db_url: str) -> str:
    """The result backend of ``bench/backend.py``'s variant ``kind`` (named with hyphens)."""
    return {slug(name): url for name, url in variants(db_url, redis_url).items()}[kind]


def slug(variant: str) -> str:
    return variant.replace(", ", "-").replace(" ", "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--transport", choices=("taskqueue", "stock"), default="taskqueue")
    parser.add_argument("--result-backend", default=None,
                        choices=[slug(name) for name in variants("", "")])  # fmt: skip
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    db_url = os.environ.get("DATABASE_URL", DEFAULT_DB)
    schema = f"tq_profile_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(db_url) if args.result_backend else None
    if engine is not None:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
            profile(args, server.url, db_url, schema, Path(tmp) / "worker.prof")
    finally:
        if engine is not None:
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))


def profile(args: argparse.Namespace, url: str, db_url: str, schema: str, out: Path) -> None:
    if args.result_backend:
        env = environment(url, backend_url(args.result_backend, url, db_url), schema, args.tasks)
        os.environ.update(env)
        sys.modules.pop("bench.backend_app", None)
        module: Any = importlib.import_module("bench.backend_app")
        if env["BENCH_RESULT_BACKEND"]:
            module.app.backend.get_task_meta(str(uuid.uuid4()))  # tables made before timing
        app_name, last_key, label = "bench.backend_app", "benchb:last", args.result_backend
    else:
        env = dict(BENCH_TRANSPORT=args.transport, BENCH_REDIS_URL=url,
                   BENCH_EXPECTED=str(args.tasks))  # fmt: skip
        module = load_app(args.transport, url, args.tasks)
        app_name, last_key, label = "bench.app", "bench:last", args.transport
    client = redis.Redis.from_url(url)
    with module.app.producer_or_acquire() as producer, producer.batch():
        for _ in range(args.tasks):
            module.noop.apply_async(producer=producer)
    worker = subprocess.Popen(
        [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "celery", "-A", app_name,
         "worker", "-l", "WARNING", "-P", "solo", "-Q", "bench", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=dict(os.environ, **env, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: client.get(last_key), 900, f"{args.tasks} tasks")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    module.app.close()
    report(out, args.tasks, label, args.top)


def report(profile: Path, tasks: int, label: str, top: int) -> None:
    stats = pstats.Stats(str(profile))
    own: Counter[str] = Counter()
    rows = []
    for (filename, line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        own[package_of(filename)] += tottime
        rows.append((tottime, f"{Path(filename).name}:{line}({name})", filename))
    total = sum(own.values())
    print(f"{label}: {tasks} tasks, solo worker, {total:.2f} s CPU in all "
          f"(start-up and shutdown included): {total / tasks * 1e6:.0f} µs per task")  # fmt: skip
    for name, seconds in own.most_common():
        print(f"  {name:22} {seconds / tasks * 1e6:7.1f} µs per task ({seconds / total:5.1%})")
    print("functions with the most own time (µs per task):")
    for tottime, where, filename in sorted(rows, reverse=True)[:top]:
        print(f"  {tottime / tasks * 1e6:7.1f}  {package_of(filename):18} {where}")


if __name__ == "__main__":
    main()
