"""The worker-side exporter, scraped from real ``celery worker`` processes:

- a prefork worker under load counts every task once, however many pool processes ran them
  (prometheus-client's multiprocess mode), with runtime and queue-wait histograms, retries and
  the main process's prefetched/running gauges;
- its samples start from zero at every worker start (the directory is emptied);
- ``/healthz`` answers 200 while the broker consumer heartbeats and 503 once the broker is
  gone past the heartbeat window;
- a task replayed from the dead letters waits from its replay, not from its first publish.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families

from taskqueue_backend.embedded import EmbeddedRedis, free_port
from taskqueue_backend.transport.keys import QueueKeys
from tests.app import make_app
from tests.support import StartWorker, operations_for, wait_for
from tests.support.dead_letters import bury
from tests.support.exported_metrics import exporter_check


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the worker's ``/metrics`` by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def healthz(port: int) -> tuple[int, str]:
    return exporter_check(port, "/healthz")


def test_a_prefork_worker_under_load_counts_every_task_once(
    start_worker: StartWorker, redis_url: str, keyprefix: str, tmp_path: Path
) -> None:
    port = free_port()
    directory = tmp_path / "metrics"
    env = {"TQ_WORKER_METRICS_PORT": str(port), "TQ_WORKER_METRICS_DIR": str(directory)}
    worker = start_worker(concurrency=2, env=env)
    worker.wait_ready()
    wait_for(lambda: healthz(port)[0] == 200, timeout=30, message=lambda: str(healthz(port)))
    assert f"worker metrics on http://0.0.0.0:{port}/metrics" in worker.log_path.read_text()
    app = make_app(redis_url, keyprefix)
    try:
        sent = [app.send_task("tests.app.record", (f"r{i}",)) for i in range(200)]
        app.send_task("tests.app.always_fail", ("x",))
        app.send_task("tests.app.fail_then_record", ("y", 1, 0.2))
        app.send_task("tests.app.sleep_then_record", ("busy", 3.0))
        busy = wait_for(lambda: (found := scrape(port)) and sum(
            v for k, v in found.items() if k[0] == "taskqueue_worker_running_tasks") and found,
            timeout=30, message="the running gauge never rose")  # fmt: skip
        assert sum(v for k, v in busy.items() if k[0] == "taskqueue_worker_running_tasks") <= 2

        def finished() -> dict | None:
            found = scrape(port)
            done = [value(found, "taskqueue_worker_tasks_total", task=f"tests.app.{name}",
                          state="succeeded")
                    for name in ("record", "fail_then_record", "sleep_then_record")]  # fmt: skip
            return found if done == [len(sent), 1, 1] else None

        samples = wait_for(finished, timeout=60, message=lambda: json.dumps(
            {str(k): v for k, v in scrape(port).items() if "tasks_total" in k[0]}))  # fmt: skip
    finally:
        app.close()
    assert value(samples, "taskqueue_worker_tasks_total", task="tests.app.always_fail",
                 state="failed") == 1  # fmt: skip
    assert value(samples, "taskqueue_worker_tasks_total", task="tests.app.fail_then_record",
                 state="retried") == 1  # fmt: skip
    assert value(samples, "taskqueue_worker_task_runtime_seconds_count",
                 task="tests.app.record") == len(sent)  # fmt: skip
    waits = value(
        samples, "taskqueue_worker_task_queue_wait_seconds_count", task="tests.app.record"
    )
    assert waits == len(sent), "the broker's publish time gives every task its queue wait"
    assert value(samples, "taskqueue_worker_task_runtime_seconds_bucket",
                 task="tests.app.sleep_then_record", le="2.5") == 0  # fmt: skip
    gauges = {k[0] for k in samples if k[0].endswith(("prefetched_tasks", "running_tasks"))}
    assert gauges == {"taskqueue_worker_prefetched_tasks", "taskqueue_worker_running_tasks"}
    pids = {p.name.split("_")[-1] for p in directory.glob("*.db")}
    assert len(pids) >= 2, f"the pool processes wrote their own files: {sorted(pids)}"

    # a new start of the worker begins from zero
    worker.stop()
    again = start_worker(concurrency=2, env=env)
    again.wait_ready()
    wait_for(lambda: healthz(port)[0] == 200, timeout=30)
    fresh = scrape(port)
    assert value(fresh, "taskqueue_worker_tasks_total", task="tests.app.record",
                 state="succeeded") == 0  # fmt: skip


def test_healthz_follows_the_broker_heartbeat(start_worker: StartWorker, keyprefix: str) -> None:
    port = free_port()
    with EmbeddedRedis() as server:
        options = json.dumps({"heartbeat_interval": 0.5, "heartbeat_timeout": 3})
        env = {"TQ_WORKER_METRICS_PORT": str(port), "TQ_TEST_REDIS_URL": server.url,
               "TQ_TEST_TRANSPORT_OPTIONS": options}  # fmt: skip
        worker = start_worker(concurrency=1, pool="solo", env=env)
        worker.wait_ready()
        status, text = wait_for(lambda: (h := healthz(port))[0] == 200 and h, timeout=30,
                                message=lambda: str(healthz(port)))  # fmt: skip
        assert "last broker heartbeat" in text
        server.stop()  # the broker goes away: no heartbeat can succeed
        started = time.monotonic()
        status, text = wait_for(lambda: (h := healthz(port))[0] == 503 and h, timeout=30,
                                message=lambda: str(healthz(port)))  # fmt: skip
        assert "no broker heartbeat for" in text
        assert time.monotonic() - started >= 2.0, "503 only once the window has passed"


def test_a_replayed_dead_letter_waits_from_its_replay_not_from_its_first_publish(
    start_worker: StartWorker, redis_url: str, keyprefix: str, redis_client: redis.Redis,
    tmp_path: Path,
) -> None:  # fmt: skip
    app = make_app(redis_url, keyprefix)
    try:
        task_id = bury(app, "tests.app.record", ("a day in the dead letters",))
    finally:
        app.close()
    ops = operations_for(redis_url, keyprefix)
    entry = ops.dead_letters.get(task_id)
    a_day_ago = int((time.time() - 86_400) * 1000)
    redis_client.hset(QueueKeys(keyprefix, "celery").message(entry.id), "published_at", a_day_ago)
    assert ops.dead_letters.get(task_id).published_at.timestamp() < time.time() - 86_000
    port = free_port()
    env = {"TQ_WORKER_METRICS_PORT": str(port), "TQ_WORKER_METRICS_DIR": str(tmp_path / "m")}
    start_worker(concurrency=1, env=env).wait_ready()
    wait_for(lambda: healthz(port)[0] == 200, timeout=30, message=lambda: str(healthz(port)))

    assert ops.dead_letters.replay([task_id], reason="fixed").done == 1
    samples = wait_for(lambda: (found := scrape(port)) and value(
        found, "taskqueue_worker_task_queue_wait_seconds_count", task="tests.app.record") == 1
        and found, timeout=30, message="the replayed task did not run")  # fmt: skip
    ops.close()
    waited = value(samples, "taskqueue_worker_task_queue_wait_seconds_sum", task="tests.app.record")
    assert waited < 30, f"the replayed task waited {waited:.0f} s: counted from its first publish"
