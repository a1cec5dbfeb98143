"""The Celery app of the recovery and dead-letter benchmarks (this package's transport).

``BENCH_REDIS_URL`` and ``BENCH_TRANSPORT_OPTIONS`` (JSON) configure it.
"""

from __future__ import annotations

import json
import os
import socket
import time

from celery import Celery, Task

from bench.common import process_client

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench-recovery")
app.conf.update(
    broker_url=REDIS_URL,
    broker_transport="taskqueue_backend.transport:Transport",
    broker_transport_options=json.loads(os.environ.get("BENCH_TRANSPORT_OPTIONS") or "{}"),
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_default_queue="bench",
)


@app.task(name="bench.hold", bind=True, acks_late=True)
def hold(self: Task, label: str, seconds: float) -> None:
    """Record where and when it started; the first delivery then holds its worker."""
    redelivered = (self.request.get("delivery_count") or 1) > 1
    entry = {"label": label, "node": self.request.hostname, "host": socket.gethostname(),
             "t": time.time(), "redelivered": redelivered}  # fmt: skip
    process_client(REDIS_URL).rpush("bench:started", json.dumps(entry))
    if not redelivered:
        time.sleep(seconds)


@app.task(name="bench.noop")
def noop() -> None:
    """Does nothing (the dead-letter benchmark only stores and replays its messages)."""
