"""Faults a worker meets in production, and what the broker keeps through them.

- Redis going away under a worker (a clean restart while idle, a SIGKILL while busy): the
  worker reconnects and every message Redis kept runs; with ``appendfsync always`` that is
  every message whose publish returned. Only messages in flight at the crash may run twice.
- Input that cannot be processed (not an envelope, a body that does not decode, an unknown
  task name, a task rejecting its message): a clear error, the worker keeps serving, and the
  message is kept in its queue's dead letters with a reason, never dropped. An invalid
  priority is refused at publish time and nothing is stored.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Producer

from taskqueue_backend.embedded import EmbeddedRedis
from taskqueue_backend.operations import Filter, MessageLocation, Operations, to_json
from taskqueue_backend.transport import InvalidPriority
from taskqueue_backend.transport.keys import QueueKeys
from taskqueue_backend.transport.messages import now_ms, publish_call
from tests.app import TRANSPORT, make_app, read_log
from tests.support import StartWorker, WorkerProcess, operations_for, wait_for

QUEUE = "celery"
#: a short heartbeat window so a crashed consumer's leases come back within seconds
HEARTBEAT = {"heartbeat_interval": 0.5, "heartbeat_timeout": 3}
CONCURRENCY = 2
PREFETCH_MULTIPLIER = 4
CONNECTION_LOST = "Connection to broker lost"


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own (append-only, fsync always) that it may stop, kill, restart.

    Tests request it before ``start_worker``, so their workers stop while it still runs.
    """
    server = EmbeddedRedis(appendonly=True, dir=str(tmp_path / "redis")).start()
    yield server
    server.stop()


def worker_env(url: str, transport_options: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        "TQ_TEST_REDIS_URL": url,
        "TQ_TEST_TRANSPORT_OPTIONS": json.dumps(transport_options),
        **extra,
    }


def inspector_for(url: str, keyprefix: str, **options: Any) -> Operations:
    return operations_for(url, keyprefix, **options)


def labels(log_client: redis.Redis, keyprefix: str) -> list[str]:
    return [entry["label"] for entry in read_log(log_client, keyprefix)]


def dead_letter_of(inspector: Operations, task_id: str) -> MessageLocation | None:
    """The task's message once it is a dead letter (``None`` while it is anywhere else)."""
    found = [m for m in inspector.queues.find(task_id) if m.state == "dead"]
    return found[0] if found else None


def assert_still_serving(
    worker: WorkerProcess, client: Celery, log_client: redis.Redis, keyprefix: str, label: str
) -> None:
    """The worker is alive and runs a normal task published now."""
    client.send_task("tests.app.record", (label,))
    wait_for(
        lambda: label in labels(log_client, keyprefix),
        timeout=30,
        message=lambda: f"worker stopped serving; log tail:\n{worker.log_tail()}",
    )
    assert worker.running


# -- Redis restarts ----------------------------------------------------------------------------


def test_idle_worker_reconnects_after_redis_restarts(
    broker: EmbeddedRedis, start_worker: StartWorker, keyprefix: str
) -> None:
    worker = start_worker(env=worker_env(broker.url, HEARTBEAT)).wait_ready()
    client = make_app(broker.url, keyprefix, **HEARTBEAT)
    log_client = redis.Redis.from_url(broker.url)
    try:
        client.send_task("tests.app.record", ("before",))
        wait_for(lambda: labels(log_client, keyprefix) == ["before"], timeout=30)

        broker.stop()
        wait_for(
            lambda: CONNECTION_LOST in worker.log_text(),
            timeout=30,
            message="the worker did not notice that Redis went away",
        )
        broker.restart()

        after = [f"after-{i}" for i in range(3)]
        for label in after:
            client.send_task("tests.app.record", (label,))
        wait_for(
            lambda: sorted(labels(log_client, keyprefix)) == sorted(["before", *after]),
            timeout=60,
            message=lambda: (
                f"tasks published after the restart did not run; worker log:\n{worker.log_tail()}"
            ),
        )
        assert worker.running
    finally:
        client.close()
        log_client.close()


def test_no_task_is_lost_when_redis_crashes_under_a_busy_worker(
    broker: EmbeddedRedis,
    start_worker: StartWorker,
    keyprefix: str,
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    """SIGKILL Redis mid-stream: every published task still runs; repeats are redeliveries.

    The tasks log to the session's Redis (``redis_client``), which stays up throughout.
    """
    total = 200
    expected = {f"t{i}" for i in range(total)}
    client = make_app(broker.url, keyprefix, **HEARTBEAT)
    try:
        with client.producer_or_acquire() as producer:
            for i in range(total):
                client.send_task(
                    "tests.app.sleep_then_record_to",
                    (f"t{i}", 0.02, redis_url),
                    producer=producer,
                )
    finally:
        client.close()
    inspector = inspector_for(broker.url, keyprefix, **HEARTBEAT)
    assert inspector.queues.stats(QUEUE).ready == total

    worker = start_worker(
        concurrency=CONCURRENCY,
        env=worker_env(
            broker.url,
            HEARTBEAT,
            TQ_TEST_ACKS_LATE="1",
            TQ_TEST_PREFETCH=str(PREFETCH_MULTIPLIER),
        ),
    ).wait_ready()
    wait_for(lambda: len(read_log(redis_client, keyprefix)) >= 30, timeout=60)

    broker.kill()
    wait_for(
        lambda: CONNECTION_LOST in worker.log_text(),
        timeout=30,
        message="the worker did not notice that Redis crashed",
    )
    ran_before_restart = set(labels(redis_client, keyprefix))
    assert ran_before_restart < expected, "all tasks ran before the crash: nothing was tested"
    broker.restart()

    wait_for(
        lambda: set(labels(redis_client, keyprefix)) >= expected,
        timeout=120,
        message=lambda: (
            f"tasks lost: {sorted(expected - set(labels(redis_client, keyprefix)))}"
            f"; worker log:\n{worker.log_tail()}"
        ),
    )
    wait_for(
        lambda: (s := inspector.queues.stats(QUEUE)).ready + s.delayed + s.inflight == 0,
        timeout=30,
        message=lambda: f"messages left in the queue: {inspector.queues.stats(QUEUE)}",
    )

    runs: defaultdict[str, list[int]] = defaultdict(list)
    for entry in read_log(redis_client, keyprefix):
        runs[entry["label"]].append(entry["delivery_count"])
    assert set(runs) == expected
    repeated = {label: counts for label, counts in runs.items() if len(counts) > 1}
    # A repeat is a redelivery of the one stored message (each run saw a new delivery
    # count), and only a worker's prefetch window can have been in flight at the crash.
    for label, counts in repeated.items():
        assert len(set(counts)) == len(counts), f"{label} ran twice from one delivery: {counts}"
    assert len(repeated) <= CONCURRENCY * PREFETCH_MULTIPLIER, repeated
    assert inspector.queues.stats(QUEUE).dead == 0
    assert worker.running


# -- input the worker cannot process -----------------------------------------------------------


#: what a misconfigured producer may write: binary, not JSON, not an envelope
GARBAGE = b"\x80\x04this is not a kombu envelope {"


def write_raw_message(redis_url: str, keyprefix: str, body: bytes) -> tuple[str, QueueKeys]:
    """Store ``body`` as a ready message with the transport's own publish script, unchecked."""
    message_id = uuid.uuid4().hex
    with Connection(
        redis_url, transport=TRANSPORT, transport_options={"global_keyprefix": keyprefix}
    ) as connection:
        channel: Any = connection.default_channel
        keys: QueueKeys = channel.queue_keys(QUEUE)
        fields = {"rank": 0, "task_id": "", "due": 0, "expire_at": 0, "now": now_ms(),
                  "priority": 0}  # fmt: skip
        call_keys, call_args = publish_call(keys, message_id, body, fields)
        channel.scripts["publish"](keys=call_keys, args=call_args, client=channel.redis)
    return message_id, keys


def test_malformed_envelope_is_dead_lettered_byte_for_byte_and_the_worker_keeps_serving(
    start_worker: StartWorker, redis_url: str, keyprefix: str, redis_client: redis.Redis
) -> None:
    message_id, keys = write_raw_message(redis_url, keyprefix, GARBAGE)

    worker = start_worker().wait_ready()
    client = make_app(redis_url, keyprefix)
    inspector = inspector_for(redis_url, keyprefix)
    try:
        assert_still_serving(worker, client, redis_client, keyprefix, "after-garbage")

        dead = wait_for(lambda: inspector.dead_letters.page(Filter(queue=QUEUE)).items, timeout=30)
        assert [(m.id, m.reason) for m in dead] == [(message_id, "malformed")]
        assert "not JSON" in (dead[0].detail or "")
        assert redis_client.hget(keys.message(message_id), "body") == GARBAGE
        assert f"dead-lettered message {message_id}" in worker.log_text()
    finally:
        client.close()


def test_inspector_shows_a_message_whose_body_is_not_text(redis_url: str, keyprefix: str) -> None:
    """An operator looking at garbage (often binary) must see it, not a UnicodeDecodeError."""
    message_id, _ = write_raw_message(redis_url, keyprefix, GARBAGE)
    inspector = inspector_for(redis_url, keyprefix)

    shown = inspector.queues.message(QUEUE, message_id)

    assert shown is not None
    assert b"this is not a kombu envelope {" in (shown.body or b"")
    assert to_json(shown)["body"] == "\\x80\x04this is not a kombu envelope {"  # escaped


def test_body_that_does_not_decode_is_dead_lettered_instead_of_dropped(
    start_worker: StartWorker, redis_url: str, keyprefix: str, redis_client: redis.Redis
) -> None:
    """Celery logs a decode error and acks such a message; the broker keeps it instead."""
    worker = start_worker().wait_ready()
    task_id = str(uuid.uuid4())
    body = b"{'args': this is not JSON"
    with Connection(
        redis_url, transport=TRANSPORT, transport_options={"global_keyprefix": keyprefix}
    ) as connection:
        Producer(connection.default_channel).publish(
            body,
            exchange="",
            routing_key=QUEUE,
            serializer=None,
            content_type="application/json",
            content_encoding="utf-8",
            headers={"lang": "py", "task": "tests.app.record", "id": task_id},
        )

    client = make_app(redis_url, keyprefix)
    inspector = inspector_for(redis_url, keyprefix)
    try:
        dead = wait_for(lambda: dead_letter_of(inspector, task_id), timeout=30)
        assert dead.reason == "undecodable"
        assert "DecodeError" in (dead.detail or ""), dead.detail
        stored = json.loads(inspector.dead_letters.get(task_id).body or "")
        assert stored["headers"]["id"] == task_id  # the envelope, kept as published
        assert_still_serving(worker, client, redis_client, keyprefix, "after-undecodable")
    finally:
        client.close()


def test_unknown_task_name_is_dead_lettered_with_the_name(
    start_worker: StartWorker, redis_url: str, keyprefix: str, redis_client: redis.Redis
) -> None:
    worker = start_worker().wait_ready()
    client = make_app(redis_url, keyprefix)
    inspector = inspector_for(redis_url, keyprefix)
    try:
        task_id = client.send_task("no.such.task", ("x",)).id

        dead = wait_for(
            lambda: (m := dead_letter_of(inspector, task_id)) and m.reason == "unknown_task" and m,
            timeout=30,
            message=lambda: f"not dead-lettered as unknown_task: {inspector.queues.find(task_id)}",
        )
        assert "no.such.task" in (dead.detail or "")
        assert_still_serving(worker, client, redis_client, keyprefix, "after-unknown")
    finally:
        client.close()


@pytest.mark.parametrize("priority", [42, -1])
def test_invalid_priority_is_refused_at_publish_and_nothing_is_stored(
    redis_url: str, keyprefix: str, priority: int
) -> None:
    client = make_app(redis_url, keyprefix)
    inspector = inspector_for(redis_url, keyprefix)
    task_id = str(uuid.uuid4())
    try:
        with pytest.raises(InvalidPriority, match=r"0\.\.9"):
            client.tasks["tests.app.record"].apply_async(("p",), priority=priority, task_id=task_id)
    finally:
        client.close()

    assert inspector.queues.find(task_id) == []
    stats = inspector.queues.stats(QUEUE)
    assert (stats.ready, stats.delayed, stats.inflight, stats.dead) == (0, 0, 0, 0)


def test_task_rejecting_its_message_is_dead_lettered(
    start_worker: StartWorker, redis_url: str, keyprefix: str, redis_client: redis.Redis
) -> None:
    worker = start_worker().wait_ready()
    client = make_app(redis_url, keyprefix)
    inspector = inspector_for(redis_url, keyprefix)
    try:
        task_id = client.send_task("tests.app.reject_without_requeue", ("r",)).id

        dead = wait_for(lambda: dead_letter_of(inspector, task_id), timeout=30)
        assert dead.reason == "rejected"
        assert dead.deliveries == 1
        assert_still_serving(worker, client, redis_client, keyprefix, "after-reject")
    finally:
        client.close()
