"""The Celery app of the control-plane benchmark's Flower comparison: twenty task names, every
twentieth call fails, on this package's broker (``BENCH_REDIS_URL``, ``BENCH_KEYPREFIX``),
with task events on so Flower sees every task."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bench-control-plane")
app.conf.update(
    broker_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    broker_transport="taskqueue_backend.transport:Transport",
    broker_transport_options={"global_keyprefix": os.environ.get("BENCH_KEYPREFIX", "")},
    task_ignore_result=True,
    task_send_sent_event=True,
    worker_send_task_events=True,
    taskqueue_dead_letter_failures=False,
    broker_connection_retry_on_startup=True,
    task_default_queue="bench",
)

NAMES = 20


def _register(index: int) -> None:
    @app.task(name=f"bench.task_{index}")
    def task(i: int) -> int:
        if i % 20 == 0:
            raise ValueError(f"boom {i}")
        return i


for _index in range(NAMES):
    _register(_index)
