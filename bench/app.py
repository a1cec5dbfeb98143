"""The Celery app the broker benchmark runs, configured from the environment.

``BENCH_TRANSPORT=stock`` uses kombu's own Redis transport, ``taskqueue`` this package's,
``memory`` kombu's in-process transport (no broker at all: what Celery and kombu cost a publish
by themselves); every other setting is identical.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from bench.common import process_client

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TRANSPORT = os.environ.get("BENCH_TRANSPORT", "stock")
EXPECTED = int(os.environ.get("BENCH_EXPECTED", "0"))

app = Celery("bench")
app.conf.update(
    broker_url=REDIS_URL,
    task_ignore_result=True,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    task_default_queue="bench",
)
if TRANSPORT == "taskqueue":
    app.conf.broker_transport = "taskqueue_backend.transport:Transport"
elif TRANSPORT == "memory":
    app.conf.broker_url = "memory://"


def _redis() -> redis.Redis:
    return process_client(REDIS_URL)


@app.task(name="bench.noop")
def noop() -> None:
    """Count itself; the first and the last record the time (drain throughput)."""
    n = _redis().incr("bench:done")
    if n == 1:
        _redis().set("bench:first", time.time())
    if n == EXPECTED:
        _redis().set("bench:last", time.time())


@app.task(name="bench.probe")
def probe(sent: float) -> None:
    """Record how long after publishing the task started (pickup latency)."""
    _redis().rpush("bench:latency", time.time() - sent)
