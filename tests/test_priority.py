"""Delivery order: strict priorities, FIFO within a priority, requeues, several queues.

Ordering is observed where it matters, in the order a single-threaded (``solo``) worker runs
the tasks, except for requeues, which are pinned at the kombu level where each delivery and
each requeue can be driven one at a time.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import kombu
import pytest
import redis
from celery import Celery

from taskqueue_backend.operations import Operations
from taskqueue_backend.transport import BrokerOptions, InvalidPriority
from tests.app import TRANSPORT, log_key, make_app, read_log
from tests.support import StartWorker, WorkerProcess, operations_for, wait_for

RECORD = "tests.app.record"

#: generous: other test files run workers on the same two cores at the same time
RUN_TIMEOUT = 90.0


# -- helpers -----------------------------------------------------------------------------


def due_now() -> datetime:
    return datetime.now(UTC)


def publish(app: Celery, items: Sequence[tuple[str, int | None]], queue: str = "celery") -> None:
    """Send ``record(label)`` for each ``(label, priority)``, in order, on one producer."""
    with app.producer_or_acquire() as producer:
        for label, priority in items:
            app.send_task(RECORD, args=[label], priority=priority, queue=queue, producer=producer)


def start_solo_worker(
    start_worker: StartWorker,
    queues: Sequence[str] = ("celery",),
    prefetch: int = 1,
    transport_options: dict[str, Any] | None = None,
) -> WorkerProcess:
    """One worker running one task at a time, so the log order is the delivery order."""
    env = {"TQ_TEST_PREFETCH": str(prefetch)}
    if transport_options:
        env["TQ_TEST_TRANSPORT_OPTIONS"] = json.dumps(transport_options)
    worker = start_worker(queues=queues, concurrency=1, pool="solo", env=env)
    return worker.wait_ready(timeout=60)


def labels_run(redis_client: redis.Redis, keyprefix: str, count: int) -> list[str]:
    """Wait until ``count`` tasks have recorded, then return their labels in run order."""
    key = log_key(keyprefix)
    wait_for(
        lambda: redis_client.llen(key) >= count,
        timeout=RUN_TIMEOUT,
        interval=0.1,
        message=lambda: f"expected {count} tasks to run, {redis_client.llen(key)} did",
    )
    return [entry["label"] for entry in read_log(redis_client, keyprefix)]


def shuffled_by_priority(priorities: Sequence[int], seed: int) -> list[tuple[str, int]]:
    """``(label, priority)`` pairs in a shuffled publish order; labels are unique."""
    order = list(priorities)
    random.Random(seed).shuffle(order)
    return [(f"p{priority}-n{n}", priority) for n, priority in enumerate(order)]


def expected_order(published: Sequence[tuple[str, int]], higher_first: bool) -> list[str]:
    """Strict priority, then publish order (``sorted`` is stable)."""
    ordered = sorted(published, key=lambda item: -item[1] if higher_first else item[1])
    return [label for label, _ in ordered]


def broker_for(redis_url: str, keyprefix: str, **options: Any) -> Operations:
    return operations_for(redis_url, keyprefix, **options)


# -- strict priority through a worker ----------------------------------------------------


def test_ten_priorities_run_lowest_number_first_and_fifo_within_each(
    redis_url: str, keyprefix: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    published = shuffled_by_priority([p for p in range(10) for _ in range(3)], seed=10)
    with make_app(redis_url, keyprefix) as app:
        publish(app, published)

    start_solo_worker(start_worker)

    ran = labels_run(redis_client, keyprefix, len(published))
    assert ran == expected_order(published, higher_first=False)


def test_amqp_priority_order_runs_highest_number_first_and_fifo_within_each(
    redis_url: str, keyprefix: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    options = {"priority_order": "amqp"}
    published = shuffled_by_priority([p for p in range(10) for _ in range(3)], seed=11)
    with make_app(redis_url, keyprefix, **options) as app:
        publish(app, published)

    start_solo_worker(start_worker, transport_options=options)

    ran = labels_run(redis_client, keyprefix, len(published))
    assert ran == expected_order(published, higher_first=True)


@pytest.mark.parametrize("priority_order", ["redis", "amqp"])
def test_priorities_up_to_255_keep_strict_order(
    redis_url: str,
    keyprefix: str,
    redis_client: redis.Redis,
    start_worker: StartWorker,
    priority_order: str,
) -> None:
    options = {"max_priority": 255, "priority_order": priority_order}
    rng = random.Random(255)
    edges = [0, 1, 2, 9, 10, 127, 128, 129, 253, 254, 255, 255, 0]
    priorities = edges + [rng.randrange(256) for _ in range(27)]
    published = shuffled_by_priority(priorities, seed=256)
    with make_app(redis_url, keyprefix, **options) as app:
        publish(app, published)

    start_solo_worker(start_worker, transport_options=options)

    ran = labels_run(redis_client, keyprefix, len(published))
    assert ran == expected_order(published, higher_first=priority_order == "amqp")


def test_a_delayed_message_once_due_runs_ahead_of_lower_priorities(
    redis_url: str, keyprefix: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    broker = broker_for(redis_url, keyprefix)
    with make_app(redis_url, keyprefix) as app:
        urgent = app.send_task(RECORD, args=["urgent, delayed"], priority=0, countdown=1.0)
        assert [m.state for m in broker.queues.find(urgent.id)] == ["delayed"]
        publish(app, [(f"routine-{n}", 6) for n in range(3)])
    wait_for(
        lambda: (broker.queues.stats("celery").next_due_at or due_now()) <= due_now(),
        timeout=10,
        message="the delayed message never fell due",
    )

    start_solo_worker(start_worker)

    ran = labels_run(redis_client, keyprefix, 4)
    assert ran == ["urgent, delayed", "routine-0", "routine-1", "routine-2"]


@pytest.mark.parametrize("priority_order", ["redis", "amqp"])
def test_a_retried_task_keeps_its_priority(
    redis_url: str,
    keyprefix: str,
    redis_client: redis.Redis,
    start_worker: StartWorker,
    priority_order: str,
) -> None:
    options = {"priority_order": priority_order}
    start_solo_worker(start_worker, transport_options=options)
    with make_app(redis_url, keyprefix, **options) as app:
        result = app.send_task(
            "tests.app.fail_then_record", args=["retried", 1], kwargs={"countdown": 60}, priority=7
        )
    broker = broker_for(redis_url, keyprefix, **options)

    def retry_waiting() -> list[Any]:
        return [m for m in broker.queues.find(result.id) if m.state == "delayed"]

    waiting = wait_for(retry_waiting, timeout=RUN_TIMEOUT, message="the task was never retried")
    assert [m.priority for m in waiting] == [7]


@pytest.mark.parametrize(
    ("options", "priority"),
    [
        ({"max_priority": 255}, 256),
        ({}, 10),
        ({}, -1),
        ({}, "high"),
        ({"max_priority": 255}, 2.5),
        ({"priority_order": "amqp"}, 10),
    ],
    ids=["256-over-255", "10-over-default-9", "negative", "string", "float", "amqp-10"],
)
def test_out_of_range_priority_is_refused_at_publish_and_nothing_is_stored(
    redis_url: str,
    keyprefix: str,
    redis_client: redis.Redis,
    options: dict[str, Any],
    priority: Any,
) -> None:
    with make_app(redis_url, keyprefix, **options) as app:
        with pytest.raises(InvalidPriority, match="priority") as refused:
            app.send_task(RECORD, args=["refused"], priority=priority)
        assert isinstance(refused.value, ValueError)
        # the connection stays usable: a valid publish right after goes through
        app.send_task(RECORD, args=["accepted"], priority=0)

    stats = broker_for(redis_url, keyprefix, **options).queues.stats("celery")
    assert stats.ready == 1
    assert stats.delayed == stats.inflight == stats.dead == 0
    stored = list(redis_client.scan_iter(match=f"{keyprefix}tq:*:m:*", count=500))
    assert len(stored) == 1
    assert b"accepted" in redis_client.hget(stored[0], "body")


@pytest.mark.parametrize("priority_order", ["redis", "amqp"])
def test_celery_task_default_priority_applies_and_an_explicit_zero_is_kept(
    redis_url: str, keyprefix: str, priority_order: str
) -> None:
    options = {"priority_order": priority_order}
    with make_app(redis_url, keyprefix, **options) as app:
        app.conf.task_default_priority = 5
        record = app.tasks[RECORD]
        explicit = record.apply_async(args=["explicit zero"], priority=0)
        default = record.apply_async(args=["no priority given"])

    broker = broker_for(redis_url, keyprefix, **options)
    assert [m.priority for m in broker.queues.find(explicit.id)] == [0]
    assert [m.priority for m in broker.queues.find(default.id)] == [5]
    assert broker.queues.stats("celery").ready_by_priority == {0: 1, 5: 1}


def test_a_non_zero_default_priority_option_is_refused() -> None:
    # kombu publishes priority 0 when none was given and then applies the channel default
    # with `priority or default`: an explicit 0 cannot be told apart from "no priority",
    # so a non-zero default would silently rewrite every priority-0 message.
    with pytest.raises(ValueError, match="task_default_priority"):
        BrokerOptions.from_transport_options({"default_priority": 5})


# -- requeue position, at the kombu level ------------------------------------------------


@contextmanager
def kombu_connection(redis_url: str, keyprefix: str, **options: Any) -> Iterator[Any]:
    connection = kombu.Connection(
        redis_url,
        transport=TRANSPORT,
        transport_options={"global_keyprefix": keyprefix, **options},
    )
    with connection:
        yield connection


JOBS = kombu.Queue("jobs", kombu.Exchange("jobs", "direct"), routing_key="jobs")


def send(connection: Any, items: Sequence[tuple[str, int]]) -> None:
    producer = connection.Producer()
    for label, priority in items:
        producer.publish(
            {"label": label},
            exchange=JOBS.exchange,
            routing_key="jobs",
            priority=priority,
            declare=[JOBS],
        )


def take(connection: Any) -> Any:
    """The next message of ``jobs`` (unacknowledged), or fail when there is none."""
    message = JOBS(connection.default_channel).get(no_ack=False)
    assert message is not None, "expected a message in queue 'jobs', found none"
    return message


def drain(connection: Any) -> list[Any]:
    """Every remaining message of ``jobs`` in delivery order, each acknowledged."""
    bound = JOBS(connection.default_channel)
    taken = []
    while (message := bound.get(no_ack=False)) is not None:
        message.ack()
        taken.append(message)
    return taken


def label(message: Any) -> str:
    return str(message.payload["label"])


@pytest.mark.parametrize("how", ["requeue", "reject"])
@pytest.mark.parametrize(
    ("priority_order", "high", "mid", "low"), [("redis", 1, 5, 8), ("amqp", 8, 5, 1)]
)
def test_requeued_message_returns_to_where_it_was_leased_from(
    redis_url: str,
    keyprefix: str,
    how: str,
    priority_order: str,
    high: int,
    mid: int,
    low: int,
) -> None:
    with kombu_connection(redis_url, keyprefix, priority_order=priority_order) as connection:
        send(connection, [("m1", mid), ("m2", mid), ("m3", mid), ("low", low)])
        first = take(connection)
        assert label(first) == "m1"
        assert first.delivery_info["redelivered"] is False
        assert "delivery_count" not in first.headers  # exactly the published headers
        assert first.properties["tq_delivery_count"] == 1
        # published while m1 is out: a requeue must not jump ahead of it
        send(connection, [("high", high)])

        if how == "requeue":
            first.requeue()
        else:
            first.reject(requeue=True)

        rest = drain(connection)
        assert [label(m) for m in rest] == ["high", "m1", "m2", "m3", "low"]
        again = rest[1]
        assert again.delivery_info["redelivered"] is True
        assert again.headers["delivery_count"] == 2  # added on a redelivery only
        assert all(m.delivery_info["redelivered"] is False for m in rest if m is not again)
        assert all("delivery_count" not in m.headers for m in rest if m is not again)


def test_unacked_messages_handed_back_at_close_keep_their_order(
    redis_url: str, keyprefix: str
) -> None:
    with kombu_connection(redis_url, keyprefix) as connection:
        send(connection, [("m1", 3), ("m2", 3), ("m3", 3), ("m4", 3), ("later", 4)])
        held = [take(connection), take(connection)]
        assert [label(m) for m in held] == ["m1", "m2"]
    # closing the connection returned both unacknowledged messages to their queue

    with kombu_connection(redis_url, keyprefix) as connection:
        rest = drain(connection)
    assert [label(m) for m in rest] == ["m1", "m2", "m3", "m4", "later"]
    assert [m.headers.get("delivery_count") for m in rest] == [2, 2, None, None, None]
    assert [m.properties["tq_delivery_count"] for m in rest] == [2, 2, 1, 1, 1]
    assert [m.delivery_info["redelivered"] for m in rest] == [True, True, False, False, False]


def test_several_requeued_messages_keep_their_order_ahead_of_newer_ones(
    redis_url: str, keyprefix: str
) -> None:
    with kombu_connection(redis_url, keyprefix) as connection:
        send(connection, [("m1", 4), ("m2", 4), ("m3", 4)])
        taken = [take(connection) for _ in range(3)]
        send(connection, [("newer", 4)])
        for message in taken:  # requeued in the order they came: m1, m2, m3
            message.requeue()
        rest = drain(connection)
    assert [label(m) for m in rest] == ["m1", "m2", "m3", "newer"]


# -- several queues ----------------------------------------------------------------------


def queue_of(ran: Sequence[str]) -> list[str]:
    return [name.split("-", 1)[0] for name in ran]


def test_round_robin_alternates_between_queues_that_both_have_messages(
    redis_url: str, keyprefix: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    per_queue = 8
    with make_app(redis_url, keyprefix) as app:
        publish(app, [(f"b-{n}", None) for n in range(per_queue)], queue="b")
        publish(app, [(f"a-{n}", None) for n in range(per_queue)], queue="a")

    start_solo_worker(start_worker, queues=("a", "b"))

    ran = labels_run(redis_client, keyprefix, 2 * per_queue)
    # kombu's round_robin_cycle moves the queue just served to the end of the list; with
    # prefetch 1 every fetch takes one message, so the queues alternate one by one
    assert queue_of(ran) == ["a", "b"] * per_queue
    assert [x for x in ran if x.startswith("a-")] == [f"a-{n}" for n in range(per_queue)]
    assert [x for x in ran if x.startswith("b-")] == [f"b-{n}" for n in range(per_queue)]


def test_priority_queue_order_drains_the_first_queue_before_the_next(
    redis_url: str, keyprefix: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    per_queue = 8
    options = {"queue_order_strategy": "priority"}
    with make_app(redis_url, keyprefix, **options) as app:
        # b's messages are older: queue order, not age, decides
        publish(app, [(f"b-{n}", None) for n in range(per_queue)], queue="b")
        publish(app, [(f"a-{n}", None) for n in range(per_queue)], queue="a")

    start_solo_worker(start_worker, queues=("a", "b"), transport_options=options)

    ran = labels_run(redis_client, keyprefix, 2 * per_queue)
    assert ran == [f"a-{n}" for n in range(per_queue)] + [f"b-{n}" for n in range(per_queue)]


# -- FIFO at scale -----------------------------------------------------------------------


def test_five_hundred_tasks_of_one_priority_run_in_publish_order(
    redis_url: str, keyprefix: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    # published while the worker consumes, fetched in batches of up to 50
    start_solo_worker(start_worker, prefetch=50)
    labels = [f"t{n:03d}" for n in range(500)]
    with make_app(redis_url, keyprefix) as app:
        publish(app, [(name, 4) for name in labels])

    ran = labels_run(redis_client, keyprefix, len(labels))
    assert ran == labels
