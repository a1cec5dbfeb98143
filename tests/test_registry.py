"""The worker registry tells the truth: the queues a worker consumes now, and what it returned.

- ``celery control cancel_consumer`` / ``add_consumer`` show in the registry within one
  heartbeat (a queue the worker stopped consuming is no longer listed);
- a warm shutdown that hands back prefetched messages counts them as returned;
- processed and failed are both counted per worker process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from taskqueue_backend.operations import Operations
from tests.app import make_app, read_log
from tests.support import StartWorker, WorkerProcess, operations_for, wait_for

BEAT = {"heartbeat_interval": 0.5, "heartbeat_timeout": 3.0}


@pytest.fixture
def client(redis_url: str, keyprefix: str) -> Iterator[Celery]:
    app = make_app(redis_url, keyprefix, **BEAT)
    yield app
    app.close()


@pytest.fixture
def ops(redis_url: str, keyprefix: str) -> Iterator[Operations]:
    found = operations_for(redis_url, keyprefix, **BEAT)
    yield found
    found.close()


def queues_of(ops: Operations, worker: WorkerProcess) -> list[str] | None:
    found = [w for w in ops.workers.all("online") if w.pid == worker.pid]
    return found[0].queues if found else None


def test_consumer_changes_show_in_the_registry_within_one_heartbeat(
    client: Celery, ops: Operations, start_worker: StartWorker
) -> None:
    name = "changing@localhost"
    env = {"TQ_TEST_TRANSPORT_OPTIONS": json.dumps(BEAT)}
    worker = start_worker(queues=("celery", "extra"), env=env, hostname=name).wait_ready()
    wait_for(lambda: queues_of(ops, worker) == ["celery", "extra"], timeout=10,
             message=lambda: f"registry: {queues_of(ops, worker)}")  # fmt: skip

    replies = client.control.cancel_consumer("extra", destination=[name], reply=True, timeout=10)
    assert replies and "ok" in replies[0][name], replies
    cancelled_at = time.monotonic()
    wait_for(lambda: queues_of(ops, worker) == ["celery"], timeout=10, interval=0.05,
             message=lambda: f"registry still lists {queues_of(ops, worker)}")  # fmt: skip
    assert time.monotonic() - cancelled_at <= BEAT["heartbeat_interval"] + 1.0

    client.control.add_consumer("more", destination=[name], reply=True, timeout=10)
    wait_for(lambda: queues_of(ops, worker) == ["celery", "more"], timeout=10, interval=0.05,
             message=lambda: f"registry: {queues_of(ops, worker)}")  # fmt: skip
    # a task for the queue it no longer consumes stays where it is
    client.send_task("tests.app.record", ("not taken",), queue="extra")
    time.sleep(1.0)
    assert ops.queues.stats("extra").ready == 1


def test_a_warm_shutdown_counts_the_messages_it_hands_back_as_returned(
    client: Celery, ops: Operations, start_worker: StartWorker, redis_client: redis.Redis,
    keyprefix: str,
) -> None:  # fmt: skip
    env = {"TQ_TEST_TRANSPORT_OPTIONS": json.dumps(BEAT), "TQ_TEST_PREFETCH": "5"}
    worker = start_worker(env=env, concurrency=1, hostname="warm@localhost").wait_ready()
    running = client.send_task("tests.app.sleep_then_record", ("running", 3.0)).id
    waiting = [client.send_task("tests.app.record", (f"w{i}",)).id for i in range(4)]
    # the worker runs one (acknowledged when it started) and holds the other four prefetched;
    # four in flight alone can also be the first fetch, before the last publish and the ack
    wait_for(lambda: ops.queues.stats("celery").inflight == 4 and not ops.queues.find(running),
             timeout=30, message=lambda: f"running task still in the broker, or not "
             f"prefetched: {ops.queues.find(running)} {ops.queues.stats('celery')}")  # fmt: skip

    assert worker.stop() == 0  # warm: the running task finishes, the prefetched go back

    # the pool may take one more prefetched task as the running one ends (it then runs it)
    ran = {e["label"] for e in read_log(redis_client, keyprefix)} - {"running"}
    assert len(ran) <= 1, ran
    back = len(waiting) - len(ran)
    [gone] = [w for w in ops.workers.all("offline") if w.pid == worker.pid]
    assert (gone.offline_reason, gone.returned) == ("stopped", back)
    queued = sorted(m.task_id for q in waiting for m in ops.queues.find(q))
    assert len(queued) == back and set(queued) <= set(waiting)
    assert ops.queues.stats("celery").ready == back


def test_processed_and_failed_are_counted_per_worker_process(
    client: Celery, ops: Operations, start_worker: StartWorker
) -> None:
    env = {"TQ_TEST_TRANSPORT_OPTIONS": json.dumps(BEAT)}
    first = start_worker(env=env, concurrency=2, hostname="counted@localhost").wait_ready()
    client.send_task("tests.app.record", ("ok",))
    client.send_task("tests.app.always_fail", ("no",))
    wait_for(lambda: [(w.processed, w.failed) for w in ops.workers.all("online")] == [(2, 1)],
             timeout=30, message=lambda: f"{ops.workers.all()}")  # fmt: skip
    assert first.stop() == 0

    second = start_worker(env=env, concurrency=2, hostname="counted@localhost").wait_ready()
    client.send_task("tests.app.record", ("again",))
    wait_for(lambda: [(w.pid, w.processed, w.failed) for w in ops.workers.all("online")]
             == [(second.pid, 1, 0)], timeout=30,
             message=lambda: f"{ops.workers.all()}")  # fmt: skip
    [old] = ops.workers.all("offline")
    assert (old.pid, old.processed, old.failed) == (first.pid, 2, 1)
