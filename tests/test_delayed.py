"""Delayed delivery: ETA, countdown, retries, message TTL, and no redelivery of long tasks.

A delayed message waits in the broker's ``delayed`` set until it is due, so no worker holds it
in memory meanwhile; it runs once, on time. A worker that keeps heartbeating keeps its leases
however long its tasks take (there is no visibility timeout), and a message whose TTL passes
before delivery is dead-lettered with reason "expired" instead of being run.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from celery import Celery

from taskqueue_backend.operations import Filter, MessageLocation, Operations
from tests.app import make_app, read_log
from tests.support import StartWorker, operations_for, wait_for

QUEUE = "celery"
#: how much earlier than its due time a task may start (clocks of separate processes)
CLOCK_SLACK = 0.05
#: how much later than its due time a task must have started
LATENESS = 1.0
SHORT_HEARTBEAT = {"heartbeat_interval": 0.5, "heartbeat_timeout": 2}

MakeClient = Callable[..., tuple[Celery, Operations]]


@pytest.fixture
def make_client(redis_url: str, keyprefix: str) -> Iterator[MakeClient]:
    """Build a publishing app and a broker inspector sharing the given transport options."""
    made: list[tuple[Celery, Operations]] = []

    def make(**transport_options: Any) -> tuple[Celery, Operations]:
        app = make_app(redis_url, keyprefix, **transport_options)
        inspector = operations_for(redis_url, keyprefix, **transport_options)
        made.append((app, inspector))
        return app, inspector

    yield make
    for app, inspector in made:
        # app.close() leaves pooled connections open; a channel that consumed control replies
        # keeps heartbeating into this test's keys until it is closed.
        app.pool.force_close_all()
        app.close()
        inspector.close()


def only_location(inspector: Operations, task_id: str) -> MessageLocation:
    found = inspector.queues.find(task_id)
    assert len(found) == 1, f"expected one message for task {task_id}, found {found}"
    return found[0]


def wait_for_labels(
    redis_client: redis.Redis, keyprefix: str, labels: set[str], timeout: float
) -> list[dict[str, Any]]:
    """Wait until every label in ``labels`` has been recorded; return the whole log."""

    def all_recorded() -> list[dict[str, Any]] | None:
        entries = read_log(redis_client, keyprefix)
        return entries if labels <= {e["label"] for e in entries} else None

    return wait_for(
        all_recorded,
        timeout=timeout,
        message=lambda: (
            f"not every task of {sorted(labels)} ran; log: "
            f"{[e['label'] for e in read_log(redis_client, keyprefix)]}"
        ),
    )


def wait_until_queue_is_settled(inspector: Operations, timeout: float = 20.0) -> None:
    """Wait until nothing is ready, delayed or in flight: no further delivery can happen."""

    def settled() -> bool:
        stats = inspector.queues.stats(QUEUE)
        return stats.ready == 0 and stats.delayed == 0 and stats.inflight == 0

    wait_for(
        settled,
        timeout=timeout,
        message=lambda: f"queue never settled: {inspector.queues.stats(QUEUE)}",
    )


def test_countdown_and_eta_messages_wait_in_the_broker_then_run_once_on_time(
    start_worker: StartWorker,
    make_client: MakeClient,
    redis_client: redis.Redis,
    keyprefix: str,
) -> None:
    hostname = f"delayed-{uuid.uuid4().hex[:8]}@localhost"
    start_worker(hostname=hostname).wait_ready()
    app, inspector = make_client()
    record = app.tasks["tests.app.record"]

    published_from = time.time()
    sent = {
        f"countdown-{i}": record.apply_async((f"countdown-{i}",), countdown=2) for i in range(2)
    }
    published_until = time.time()
    eta = datetime.now(UTC) + timedelta(seconds=2)
    sent.update({f"eta-{i}": record.apply_async((f"eta-{i}",), eta=eta) for i in range(2)})

    stats = inspector.queues.stats(QUEUE)
    assert (stats.delayed, stats.ready, stats.inflight) == (4, 0, 0)
    locations = {label: only_location(inspector, result.id) for label, result in sent.items()}
    assert {label: loc.state for label, loc in locations.items()} == dict.fromkeys(sent, "delayed")
    due = {label: loc.due_at.timestamp() for label, loc in locations.items() if loc.due_at}
    for i in range(2):
        assert published_from + 2 - 0.001 <= due[f"countdown-{i}"] <= published_until + 2 + 0.001
        assert due[f"eta-{i}"] == pytest.approx(eta.timestamp(), abs=0.001)

    scheduled = app.control.inspect(destination=[hostname], timeout=10).scheduled()
    replied_at = time.time()
    assert replied_at < min(due.values()), "the worker answered only after the tasks fell due"
    # the broker holds them, not the worker (nothing is leased), and `inspect scheduled` lists
    # them from the broker in stock's shape: the ETA as the worker reads it, in isoformat(),
    # and the priority of stock's timer entry (the message's own is in delivery_info)
    assert inspector.queues.stats(QUEUE).inflight == 0
    listed = {entry["request"]["id"]: entry for entry in scheduled[hostname]}
    assert set(listed) == {result.id for result in sent.values()}
    for label, result in sent.items():
        entry = listed[result.id]
        eta_listed = datetime.fromisoformat(entry["eta"]).timestamp()
        assert eta_listed == pytest.approx(due[label], abs=0.001)
        if label.startswith("eta-"):
            assert entry["eta"] == eta.isoformat()
        assert entry["priority"] == 6
        assert entry["request"]["delivery_info"]["priority"] == 0
        assert entry["request"]["name"] == "tests.app.record"
        assert entry["request"]["args"] == [label]
        assert entry["request"]["delivery_info"]["routing_key"] == QUEUE

    wait_for_labels(redis_client, keyprefix, set(sent), timeout=20)
    wait_until_queue_is_settled(inspector)
    entries = read_log(redis_client, keyprefix)
    assert Counter(e["label"] for e in entries) == dict.fromkeys(sent, 1)
    for entry in entries:
        due_at = due[entry["label"]]
        assert due_at - CLOCK_SLACK <= entry["t"] <= due_at + LATENESS, (
            f"{entry['label']} ran {entry['t'] - due_at:+.3f} s from its due time"
        )
        assert entry["delivery_count"] == 1
        assert entry["redelivered"] is False


def test_retry_with_countdown_waits_in_the_broker_between_attempts(
    start_worker: StartWorker,
    make_client: MakeClient,
    redis_client: redis.Redis,
    keyprefix: str,
) -> None:
    start_worker().wait_ready()
    app, inspector = make_client()

    published_at = time.time()
    result = app.tasks["tests.app.fail_then_record"].apply_async(("retried", 2), {"countdown": 1.0})

    delayed_messages: set[str] = set()

    def finished() -> list[dict[str, Any]]:
        for location in inspector.queues.find(result.id):
            if location.state == "delayed":
                delayed_messages.add(location.message_id)
        return read_log(redis_client, keyprefix)

    wait_for(finished, timeout=20, message="the retried task never completed")
    wait_until_queue_is_settled(inspector)

    entries = read_log(redis_client, keyprefix)
    assert [e["label"] for e in entries] == ["retried"]
    assert entries[0]["delivery_count"] == 1
    elapsed = entries[0]["t"] - published_at
    assert 2 - CLOCK_SLACK <= elapsed <= 2 + 2 * LATENESS, f"completed after {elapsed:.3f} s"
    assert len(delayed_messages) == 2, "each retry should wait in the broker as its own message"
    assert inspector.queues.find(result.id) == []


@pytest.mark.parametrize("acks_late", [False, True], ids=["acks_early", "acks_late"])
def test_tasks_longer_than_the_heartbeat_window_are_never_redelivered(
    acks_late: bool,
    start_worker: StartWorker,
    make_client: MakeClient,
    redis_client: redis.Redis,
    keyprefix: str,
) -> None:
    worker = start_worker(
        concurrency=2,
        env={
            "TQ_TEST_TRANSPORT_OPTIONS": json.dumps(SHORT_HEARTBEAT),
            "TQ_TEST_ACKS_LATE": "1" if acks_late else "0",
        },
    ).wait_ready()
    app, inspector = make_client(**SHORT_HEARTBEAT)

    # Two waves of 5 s tasks on two processes: the second wave stays prefetched (leased)
    # for 5 s and in flight for up to 10 s, far past the 2 s heartbeat window, and the
    # countdown tasks fall due while both processes are busy.
    labels = [f"long-{i}" for i in range(4)]
    for label in labels:
        app.tasks["tests.app.sleep_then_record"].apply_async((label, 5.0))
    for i in range(2):
        labels.append(f"countdown-{i}")
        app.tasks["tests.app.record"].apply_async((f"countdown-{i}",), countdown=3)

    # While waiting, reap as any live consumer would: a worker whose leases lapsed while its
    # tasks ran would lose them here, and they would run a second time.
    reaped: list[str] = []

    def all_ran() -> bool:
        for recovery in inspector.workers.recover_stale():
            reaped.extend(recovery.returned + recovery.dead_lettered)
        recorded = {e["label"] for e in read_log(redis_client, keyprefix)}
        stats = inspector.queues.stats(QUEUE)
        return set(labels) <= recorded and stats.ready + stats.delayed + stats.inflight == 0

    wait_for(
        all_ran,
        timeout=45,
        interval=0.1,
        message=lambda: (
            f"log: {read_log(redis_client, keyprefix)}; queue: {inspector.queues.stats(QUEUE)}"
        ),
    )

    entries = read_log(redis_client, keyprefix)
    assert Counter(e["label"] for e in entries) == dict.fromkeys(labels, 1)
    assert {e["label"]: e["delivery_count"] for e in entries} == dict.fromkeys(labels, 1)
    assert reaped == [], "the busy worker was declared dead and lost its messages"
    assert inspector.queues.stats(QUEUE).dead == 0
    log = worker.log_text()
    assert "missed its heartbeat window" not in log
    assert "stopped heartbeating" not in log


def test_message_whose_ttl_passes_before_delivery_is_dead_lettered_not_run(
    start_worker: StartWorker,
    make_client: MakeClient,
    redis_client: redis.Redis,
    keyprefix: str,
) -> None:
    app, inspector = make_client()
    record = app.tasks["tests.app.record"]
    expiring = record.apply_async(("expiring",), expires=1)
    lasting = record.apply_async(("lasting",), expires=30)
    sentinel = record.apply_async(("sentinel",))

    published = only_location(inspector, expiring.id)
    assert published.state == "ready"
    assert published.published_at is not None
    expired_after = published.published_at.timestamp() + 1.0 + CLOCK_SLACK
    wait_for(lambda: time.time() > expired_after, timeout=5, message="TTL never passed")

    start_worker().wait_ready()
    entries = wait_for_labels(redis_client, keyprefix, {"lasting", "sentinel"}, timeout=20)
    wait_until_queue_is_settled(inspector)

    assert sorted(e["label"] for e in read_log(redis_client, keyprefix)) == [
        "lasting",
        "sentinel",
    ], f"log: {entries}"
    dead = only_location(inspector, expiring.id)
    assert (dead.state, dead.reason, dead.deliveries) == ("dead", "expired", 0)
    assert [m.task_id for m in inspector.dead_letters.page(Filter(queue=QUEUE)).items] == [
        expiring.id
    ]
    assert inspector.queues.find(lasting.id) == []
    assert inspector.queues.find(sentinel.id) == []
