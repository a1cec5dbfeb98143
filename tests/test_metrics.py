"""Prometheus metrics of the broker (``Operations.collector()``) read from a real broker.

Queue depths by state, retention trims, and workers by state — a forgotten worker is gone
from the metrics as it is from every view.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest

from taskqueue_backend.operations import Operations
from tests.app import make_app
from tests.support import StartWorker, operations_for, wait_for

WINDOW = {"heartbeat_interval": 0.5, "heartbeat_timeout": 3.0}


@pytest.fixture
def client(redis_url: str, keyprefix: str) -> Iterator[Celery]:
    app = make_app(redis_url, keyprefix, **WINDOW)
    yield app
    app.close()


def scrape(inspector: Operations) -> str:
    registry = CollectorRegistry()
    registry.register(inspector.collector())
    return generate_latest(registry).decode()


def test_metrics_show_queues_trims_and_workers(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker
) -> None:
    options = {**WINDOW, "dead_letter_max_count": 1}
    inspector = operations_for(redis_url, keyprefix, **options)
    worker = start_worker(env={"TQ_TEST_TRANSPORT_OPTIONS": json.dumps(options)},
                          hostname="metered@localhost").wait_ready()  # fmt: skip
    for i in range(3):
        client.send_task("no.such.task", (i,))
    wait_for(lambda: inspector.dead_letters.stats().trimmed.get("celery") == 2, timeout=30)

    text = wait_for(lambda: (t := scrape(inspector)) and "metered@localhost" in t and t,
                    timeout=10)  # fmt: skip
    assert 'taskqueue_queue_messages{queue="celery",state="dead"} 1.0' in text
    assert 'taskqueue_queue_messages{queue="celery",state="ready"} 0.0' in text
    assert 'taskqueue_dead_letters_trimmed_total{queue="celery"} 2.0' in text
    assert 'taskqueue_workers{state="online"} 1.0' in text
    assert 'worker="metered@localhost"' in text and 'state="online"} 1.0' in text

    assert worker.stop() == 0
    workers = inspector.workers
    wait_for(lambda: 'taskqueue_workers{state="offline"} 1.0' in scrape(inspector), timeout=10)
    workers.forget("metered@localhost")
    text = scrape(inspector)
    assert "metered@localhost" not in text
    assert 'taskqueue_workers{state="offline"} 0.0' in text
