"""Workers that die or freeze: real ``celery worker`` subprocesses, real signals.

A consumer's leases last as long as it heartbeats. These tests kill or pause workers and
check what the surviving workers see: nothing that was not finished is lost, only what the
dead consumer held runs twice, a message that keeps killing its worker ends in the dead
letters, and a consumer that comes back after its window cannot acknowledge a message
that was handed to someone else.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import redis
from celery import Celery

from taskqueue_backend.operations import MessageLocation, Operations
from taskqueue_backend.transport.keys import QueueKeys
from tests.app import make_app, read_log
from tests.support import StartWorker, WorkerProcess, operations_for, wait_for

QUEUE = "celery"
CRASH_OPTIONS = {"heartbeat_interval": 0.5, "heartbeat_timeout": 2.5}
TASK_COUNT = 300
WORKER_CONCURRENCY = 2
#: generous: other suites share this 2-core machine
DRAIN_DEADLINE = 120.0
RECOVERY_SLACK = 15.0

OpenBroker = Callable[[Mapping[str, Any]], tuple[Celery, Operations]]


def worker_env(
    options: Mapping[str, Any], *, acks_late: bool, prefetch: int | None = None
) -> dict[str, str]:
    env = {
        "TQ_TEST_TRANSPORT_OPTIONS": json.dumps(dict(options)),
        "TQ_TEST_ACKS_LATE": "1" if acks_late else "0",
    }
    if prefetch is not None:
        env["TQ_TEST_PREFETCH"] = str(prefetch)
    return env


@pytest.fixture
def broker(redis_url: str, keyprefix: str) -> Iterator[OpenBroker]:
    """Open a client app and an inspector sharing one set of transport options."""
    opened: list[tuple[Celery, Operations]] = []

    def open_broker(options: Mapping[str, Any]) -> tuple[Celery, Operations]:
        client = make_app(redis_url, keyprefix, **options)
        inspector = operations_for(redis_url, keyprefix, **options)
        opened.append((client, inspector))
        return client, inspector

    yield open_broker
    for client, inspector in opened:
        client.close()
        inspector.close()


def consumer_ids_of(inspector: Operations, worker: WorkerProcess) -> set[str]:
    """The registered consumers of one worker (its main process consumes)."""
    return {
        c.consumer_id
        for c in inspector.workers.all()
        if c.pid == worker.pid and c.state != "offline"
    }


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def held_task_ids(redis_client: redis.Redis, keyprefix: str, consumer_ids: set[str]) -> set[str]:
    """Task ids of the messages leased to these consumers (delivered, not yet settled)."""
    keys = QueueKeys(keyprefix, QUEUE)
    message_ids = set()
    for consumer_id in consumer_ids:
        message_ids |= {text(m) for m in redis_client.smembers(keys.held(consumer_id))}
    pipe = redis_client.pipeline(transaction=False)
    for message_id in message_ids:
        pipe.hget(keys.message(message_id), "task_id")
    return {text(t) for t in pipe.execute() if t}


def labels_logged(redis_client: redis.Redis, keyprefix: str) -> Counter[str]:
    return Counter(entry["label"] for entry in read_log(redis_client, keyprefix))


def broker_idle(inspector: Operations) -> bool:
    stats = inspector.queues.stats(QUEUE)
    return stats.ready == 0 and stats.delayed == 0 and stats.inflight == 0


def publish_sleepers(client: Celery, count: int) -> dict[str, str]:
    """Publish ``count`` short tasks (0.02-0.1 s); returns task id -> label."""
    task = client.tasks["tests.app.sleep_then_record"]
    labels = {}
    with client.producer_or_acquire() as producer:
        for i in range(count):
            label = f"t{i:03d}"
            seconds = 0.02 + (i * 7 % 9) / 100
            result = task.apply_async(args=(label, seconds), producer=producer)
            labels[result.id] = label
    return labels


def freeze_while_holding(
    worker: WorkerProcess,
    inspector: Operations,
    redis_client: redis.Redis,
    keyprefix: str,
    runs_before: int,
) -> set[str]:
    """SIGSTOP the worker's process group once tasks have run and it holds messages.

    Freezing first makes the snapshot of its leases exact: a frozen worker can neither
    acknowledge nor lease anything before it is killed. Returns the held task ids.
    """

    def holding() -> set[str]:
        if sum(labels_logged(redis_client, keyprefix).values()) < runs_before:
            return set()
        return held_task_ids(redis_client, keyprefix, consumer_ids_of(inspector, worker))

    for _ in range(20):
        wait_for(holding, timeout=60, message="the worker to be killed never held messages")
        worker.kill(signal.SIGSTOP)
        held = held_task_ids(redis_client, keyprefix, consumer_ids_of(inspector, worker))
        if held:
            return held
        worker.kill(signal.SIGCONT)  # it settled everything in between; try again
    raise AssertionError("could not catch the worker holding messages")


@pytest.mark.parametrize("acks_late", [True, False], ids=["acks_late", "ack_on_start"])
def test_sigkilled_worker_under_load_loses_nothing_it_had_not_started(
    acks_late: bool,
    start_worker: StartWorker,
    broker: OpenBroker,
    redis_client: redis.Redis,
    keyprefix: str,
) -> None:
    env = worker_env(CRASH_OPTIONS, acks_late=acks_late)
    doomed = start_worker(env=env, concurrency=WORKER_CONCURRENCY)
    survivor = start_worker(env=env, concurrency=WORKER_CONCURRENCY)
    doomed.wait_ready()
    survivor.wait_ready()
    client, inspector = broker(CRASH_OPTIONS)
    ids = QueueKeys(keyprefix, QUEUE).ids

    labels_by_task = publish_sleepers(client, TASK_COUNT)
    published_at = time.monotonic()
    held = freeze_while_holding(doomed, inspector, redis_client, keyprefix, runs_before=40)
    doomed_consumers = consumer_ids_of(inspector, doomed)
    unsettled_at_kill = {text(t) for t in redis_client.hkeys(ids)}
    doomed.kill(signal.SIGKILL)
    wait_for(lambda: not doomed.running, timeout=10, message="SIGKILL did not end the worker")

    held_labels = {labels_by_task[t] for t in held}
    assert held_labels, "the killed worker held nothing: the test proves nothing"
    assert held <= unsettled_at_kill

    # Its consumer is reaped (and its leases returned) about heartbeat_timeout after it died.
    wait_for(
        lambda: not consumer_ids_of(inspector, doomed),
        timeout=CRASH_OPTIONS["heartbeat_timeout"] + RECOVERY_SLACK,
        message="the killed worker's consumer was never removed from the registry",
    )
    for consumer_id in doomed_consumers:
        assert not redis_client.exists(QueueKeys(keyprefix, QUEUE).held(consumer_id))
    for task_id in held:
        owners = {loc.owner for loc in inspector.queues.find(task_id)}
        assert not owners & doomed_consumers, f"{labels_by_task[task_id]} still leased to the dead"

    # Everything not settled when it died runs, and the queue drains in time.
    # (with acks_late nothing is settled before it ran, so that is every task)
    must_run = {labels_by_task[t] for t in unsettled_at_kill}
    if acks_late:
        must_run = set(labels_by_task.values())
    wait_for(
        lambda: must_run <= set(labels_logged(redis_client, keyprefix)) and broker_idle(inspector),
        timeout=max(DRAIN_DEADLINE - (time.monotonic() - published_at), 1.0),
        message=lambda: (
            f"queue did not drain ({inspector.queues.stats(QUEUE)}); never ran: "
            f"{sorted(must_run - set(labels_logged(redis_client, keyprefix)))[:20]}"
        ),
    )

    def lost() -> set[str]:
        return set(labels_by_task.values()) - set(labels_logged(redis_client, keyprefix))

    if acks_late:
        assert lost() == set()
    else:
        # At-most-once: only tasks the dead worker had acknowledged and was running can be lost.
        wait_for(lambda: len(lost()) <= WORKER_CONCURRENCY, timeout=30, message="too many lost")
        assert not lost() & must_run

    log = read_log(redis_client, keyprefix)
    runs = Counter(entry["label"] for entry in log)
    twice = {label for label, count in runs.items() if count > 1}
    assert twice <= held_labels, "a message the dead worker did not hold ran twice"
    assert len(twice) <= len(held_labels)
    assert max(runs.values()) <= 2
    # Exactly the held messages came back, each redelivered once.
    redelivered = [entry for entry in log if entry["redelivered"]]
    assert {entry["label"] for entry in redelivered} == held_labels
    assert {entry["delivery_count"] for entry in redelivered} == {2}
    assert inspector.queues.stats(QUEUE).dead == 0
    assert survivor.running


def test_message_that_keeps_killing_its_worker_is_dead_lettered_as_poison(
    start_worker: StartWorker, broker: OpenBroker, redis_client: redis.Redis, keyprefix: str
) -> None:
    max_redeliveries = 2
    options = {
        "heartbeat_interval": 0.5,
        "heartbeat_timeout": 2.0,
        "max_redeliveries": max_redeliveries,
    }
    # prefetch 1 under -P solo: a worker holds only the message it runs
    env = worker_env(options, acks_late=True, prefetch=1)
    client, inspector = broker(options)
    poison = client.send_task("tests.app.kill_own_process", args=("poison",))

    def poison_state() -> str | None:
        found = inspector.queues.find(poison.id)
        return found[0].state if found else None

    deaths = 0
    survivor: WorkerProcess | None = None
    for _ in range(max_redeliveries + 3):  # bounded: a fixed product stops at 3
        worker = start_worker(pool="solo", concurrency=1, env=env)
        wait_for(
            lambda: not worker.running or poison_state() == "dead",  # noqa: B023
            timeout=60,
            message="the worker neither died from the poison task nor saw it dead-lettered",
        )
        if worker.running:
            survivor = worker
            break
        deaths += 1
        assert worker.process.returncode == -signal.SIGKILL, (
            f"worker exited with {worker.process.returncode}, not from the poison task:\n"
            f"{worker.log_tail()}"
        )

    assert survivor is not None, f"the poison message was still delivered after {deaths} deaths"
    assert deaths == max_redeliveries + 1
    (dead,) = inspector.queues.find(poison.id)
    assert (dead.task_id, dead.state, dead.reason) == (poison.id, "dead", "poison")
    assert dead.recoveries == max_redeliveries + 1 == 3
    assert dead.deliveries == 3
    assert f"max_redeliveries={max_redeliveries}" in (dead.detail or "")

    # The queue still works, and the poison task is not delivered again.
    client.send_task("tests.app.record", args=("after-poison",))
    wait_for(lambda: labels_logged(redis_client, keyprefix)["after-poison"] == 1, timeout=30)
    poison_runs = [e for e in read_log(redis_client, keyprefix) if e["label"] == "poison"]
    assert [e["delivery_count"] for e in poison_runs] == [1, 2, 3]
    assert survivor.running
    # late ack: the task logs, then returns, then its message is acknowledged
    wait_for(lambda: inspector.queues.stats(QUEUE).inflight == 0, timeout=10,
             message="the after-poison task was never acknowledged")  # fmt: skip
    stats = inspector.queues.stats(QUEUE)
    assert (stats.ready, stats.inflight, stats.dead) == (0, 0, 1)
    # The dead consumers were forgotten; only the survivor is registered.
    wait_for(
        lambda: {c.pid for c in inspector.workers.all() if c.state != "offline"} == {survivor.pid},
        timeout=10,
        message=lambda: f"registry still lists {inspector.workers.all()}",
    )


def test_worker_paused_past_its_window_loses_the_message_and_its_late_ack_is_ignored(
    start_worker: StartWorker, broker: OpenBroker, redis_client: redis.Redis, keyprefix: str
) -> None:
    options = {"heartbeat_interval": 0.5, "heartbeat_timeout": 2.0}
    env = worker_env(options, acks_late=True)
    client, inspector = broker(options)
    paused = start_worker(env=env, concurrency=1).wait_ready()
    task_id = client.tasks["tests.app.sleep_then_record"].apply_async(args=("slow", 3.0)).id

    wait_for(lambda: f"[{task_id}] received" in paused.log_text(), timeout=30)
    (first,) = inspector.queues.find(task_id)
    assert first.state == "inflight"
    assert first.owner in consumer_ids_of(inspector, paused)

    paused.kill(signal.SIGSTOP)
    try:
        other = start_worker(env=env, concurrency=1).wait_ready()

        def leased_to_other() -> MessageLocation | None:
            found = inspector.queues.find(task_id)
            if found and found[0].owner in consumer_ids_of(inspector, other):
                return found[0]
            return None

        second = wait_for(
            leased_to_other,
            timeout=options["heartbeat_timeout"] + RECOVERY_SLACK,
            message="the paused worker's message was not handed to the running worker",
        )
        assert second is not None
        assert (second.message_id, second.deliveries, second.recoveries) == (
            first.message_id,
            2,
            1,
        )
        wait_for(
            lambda: not consumer_ids_of(inspector, paused),
            timeout=10,
            message="the paused worker's consumer was not declared dead",
        )
    finally:
        paused.kill(signal.SIGCONT)

    ignored = f"ack of message {first.message_id} on '{QUEUE}' ignored"
    wait_for(
        lambda: ignored in paused.log_text(),
        timeout=30,
        message="the paused worker's late ack was not reported as ignored",
    )
    wait_for(lambda: "missed its heartbeat window" in paused.log_text(), timeout=10)
    wait_for(
        lambda: labels_logged(redis_client, keyprefix)["slow"] == 2 and broker_idle(inspector),
        timeout=30,
        message="the running worker's copy did not finish and get acknowledged",
    )

    runs = [e for e in read_log(redis_client, keyprefix) if e["label"] == "slow"]
    assert sorted(e["delivery_count"] for e in runs) == [1, 2]
    assert inspector.queues.find(task_id) == []  # acknowledged by its current owner: gone
    assert inspector.queues.stats(QUEUE).dead == 0
    assert "ignored" not in other.log_text()  # the running worker's ack was the one that counted
    for worker in (paused, other):
        assert worker.running
        assert "Traceback" not in worker.log_text()
        assert "ERROR" not in worker.log_text()
