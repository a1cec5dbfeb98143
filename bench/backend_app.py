"""The Celery app the result-backend benchmark runs, configured from the environment.

``BENCH_RESULT_BACKEND`` is the only setting that differs between runs ("" = no backend).
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from bench.common import process_client

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKEND = os.environ.get("BENCH_RESULT_BACKEND", "")
SCHEMA = os.environ.get("BENCH_DB_SCHEMA", "")
EXPECTED = int(os.environ.get("BENCH_EXPECTED", "0"))

app = Celery("bench_backend")
app.conf.update(
    broker_url=REDIS_URL,
    broker_transport="taskqueue_backend.transport:Transport",
    broker_transport_options={"global_keyprefix": os.environ.get("BENCH_KEYPREFIX", "bench:")},
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    task_default_queue="bench",
    result_extended=True,
)
if BACKEND:
    app.conf.result_backend = BACKEND
    app.conf.taskqueue_synchronous_commit = os.environ.get("BENCH_SYNC_COMMIT", "1") == "1"
    if SCHEMA:
        app.conf.taskqueue_db_schema = SCHEMA
        app.conf.database_table_schemas = {"task": SCHEMA, "group": SCHEMA}
else:
    app.conf.task_ignore_result = True


def _redis() -> redis.Redis:
    return process_client(REDIS_URL)


@app.task(name="benchb.noop")
def noop() -> int:
    """Count itself; the first and last record the time (drain throughput)."""
    n = int(_redis().incr("benchb:done"))
    if n == 1:
        _redis().set("benchb:first", time.time())
    if n == EXPECTED:
        _redis().set("benchb:last", time.time())
    return n


@app.task(name="benchb.probe")
def probe() -> float:
    """Return when it finished, so the caller can time ``get()`` after completion."""
    return time.time()
