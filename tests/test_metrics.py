"""Prometheus metrics of the broker (``Operations.collector()``) read from a real broker.

Queue depths by state, retention trims, and workers by state — a forgotten worker is gone
from the metrics as it is from every view.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

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


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition ``text`` (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


def test_history_counters_count_each_row_once_for_every_process(
    api: object, api_env: dict[str, str], start_worker: StartWorker
) -> None:
    from tests.support.control_plane import make_api
    from tests.test_api_tasks import BACKEND_APP, events_of, submit, wait_place

    first: Any = api
    second = next(
        make_api(
            api_env["TQ_TEST_REDIS_URL"],
            api_env["TQ_TEST_KEYPREFIX"],
            api_env["TQ_TEST_RESULT_BACKEND"],
            api_env.get("TQ_TEST_DB_SCHEMA"),
        )
    )
    try:
        before = first.get("/metrics", role=None).data.decode()  # counting starts here
        assert sample(before, "taskqueue_task_events_total", event="succeeded") == 0
        start_worker(app=BACKEND_APP, env=api_env).wait_ready()
        done = [submit(first, "bk.add", i, i) for i in range(2)]
        failed = submit(first, "bk.fail", "boom")
        for task_id in done:
            wait_place(first, task_id, "SUCCESS")
        wait_place(first, failed, "dead-lettered")
        wait_for(lambda: "dead_lettered" in events_of(first, failed), timeout=15)

        scraped = [app.get("/metrics", role=None).data.decode() for app in (second, first, second)]
        for text in scraped:  # the same totals, whichever process answers, however often
            assert (
                sample(text, "taskqueue_task_events_total", event="succeeded", task="bk.add") == 2
            )
            assert sample(text, "taskqueue_task_events_total", event="failed", task="bk.fail") == 1
            assert (
                sample(text, "taskqueue_task_events_total", event="dead_lettered", task="bk.fail")
                == 1
            )
            assert sample(text, "taskqueue_task_runtime_seconds_count") == 3
            assert sample(text, "taskqueue_task_runtime_seconds_bucket", le="+Inf") == 3
            assert sample(text, "taskqueue_task_queue_wait_seconds_count") == 3
        assert sample(scraped[0], "taskqueue_task_events_skipped_total") == 0
    finally:
        second.ops.close()
