"""The operations layer's broker views: finding a task, counting a queue, removing, consumers.

Tasks are published by a stock Celery client; messages are held in flight or rejected by a
plain kombu ``Consumer`` on the same transport, so no worker is needed except to show that
a removed task never runs. Lookups by task id must go through the per-queue index: the
Redis commands ``find`` sends are recorded with ``MONITOR`` and may not scan anything.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult
from kombu import Connection, Consumer, Exchange, Message, Queue

from taskqueue_backend.operations import MessageLocation, NotFound, Operations
from taskqueue_backend.operations.broker import BrokerAccess
from taskqueue_backend.transport.options import BrokerOptions
from taskqueue_backend.transport.scripts import Scripts
from tests.app import TRANSPORT, make_app, read_log
from tests.support import StartWorker, operations_for, wait_for
from tests.support.redis_service import is_cluster

QUEUE = "celery"
#: short heartbeats, so that a consumer that stops beating turns stale within a second
OPTIONS: dict[str, Any] = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0}
#: what a lookup by task id may send: the queue registry, the id index, the message itself
# index reads and O(1) existence checks of known queues; never SCAN, KEYS or ZRANGE of messages
LOOKUP_COMMANDS = {"SMEMBERS", "EXISTS", "HGET", "HMGET"}


class HeldMessages:
    """A kombu consumer that receives messages and keeps them unacknowledged."""

    def __init__(self, app: Celery, prefetch: int = 1, no_ack: bool = False) -> None:
        self.connection: Connection = app.connection_for_read()
        self.channel = self.connection.channel()
        self.messages: list[Message] = []
        queue = Queue(QUEUE, Exchange(QUEUE), QUEUE)
        self.consumer = Consumer(
            self.channel,
            [queue],
            callbacks=[lambda body, message: self.messages.append(message)],
            accept=["json"],
            no_ack=no_ack,
        )
        self.consumer.qos(prefetch_count=prefetch)
        self.consumer.consume()

    @property
    def consumer_id(self) -> str:
        return str(self.channel.consumer_id)

    def receive(self, count: int) -> list[Message]:
        """Drain until ``count`` messages have arrived in all; return them."""

        def enough() -> bool:
            try:
                self.connection.drain_events(timeout=0.2)
            except TimeoutError:
                pass
            return len(self.messages) >= count

        wait_for(enough, timeout=20, interval=0, message=f"fewer than {count} messages arrived")
        return self.messages[:count]

    def stop_heartbeat(self) -> None:
        """Freeze this consumer as far as the broker can tell (the process lives on)."""
        self.channel._heartbeat.stop()

    def close(self) -> None:
        self.connection.release()


@pytest.fixture
def client_app(redis_url: str, keyprefix: str) -> Iterator[Celery]:
    app = make_app(redis_url, keyprefix, **OPTIONS)
    yield app
    app.close()
    app.pool.force_close_all()


@pytest.fixture
def inspector(redis_url: str, keyprefix: str) -> Iterator[Operations]:
    found = operations_for(redis_url, keyprefix, **OPTIONS)
    yield found
    found.close()


@pytest.fixture
def hold(client_app: Celery) -> Iterator[Callable[..., HeldMessages]]:
    """Open kombu consumers that hold what they receive; closed at teardown."""
    opened: list[HeldMessages] = []

    def open_consumer(prefetch: int = 1, no_ack: bool = False) -> HeldMessages:
        consumer = HeldMessages(client_app, prefetch=prefetch, no_ack=no_ack)
        opened.append(consumer)
        return consumer

    yield open_consumer
    for consumer in opened:
        consumer.close()


@pytest.fixture
def locate(redis_url: str, keyprefix: str) -> Iterator[Callable[[str], MessageLocation]]:
    """``find`` one task's message, failing if the lookup scans anything.

    The lookup runs on a client limited to one connection, so that every command it sends
    (pipelined ones included) can be picked out of ``MONITOR`` by that connection's address
    (one server's: a cluster client spreads its commands over the nodes).
    """
    if is_cluster(redis_url):
        pytest.skip("counts one connection's commands with MONITOR, which needs one server")
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=1)
    client = redis.Redis(connection_pool=pool)
    watcher = redis.Redis.from_url(redis_url, socket_timeout=20)
    access = BrokerAccess(
        Connection(redis_url, transport=TRANSPORT), client, keyprefix,
        BrokerOptions.from_transport_options(OPTIONS), Scripts(client),
    )  # fmt: skip
    lookup = Operations(access, actor="tests")
    address = client.client_info()["addr"]

    def find_one(task_id: str) -> MessageLocation:
        done = f"lookup-done-{uuid.uuid4().hex}"
        with watcher.monitor() as monitor:
            found = lookup.queues.find(task_id)
            client.echo(done)
            sent = []
            while True:
                command = monitor.next_command()
                if f"{command['client_address']}:{command['client_port']}" != address:
                    continue
                if command["command"] == f"ECHO {done}":
                    break
                sent.append(command["command"])
        names = {c.split(" ", 1)[0].upper() for c in sent}
        assert names <= LOOKUP_COMMANDS, f"lookup sent more than index reads: {sent}"
        assert all(":m:" in c for c in sent if c.upper().startswith("HMGET")), sent
        assert len(found) == 1, found
        return found[0]

    yield find_one
    watcher.close()
    client.close()
    pool.disconnect()


def publish(app: Celery, label: str, **options: Any) -> AsyncResult:
    return app.signature("tests.app.record", args=(label,)).apply_async(**options)


def task_id_of(message: Message) -> str:
    return str(message.headers["id"])


# -- find ------------------------------------------------------------------------------------


def test_find_locates_a_ready_task(
    client_app: Celery, locate: Callable[[str], MessageLocation]
) -> None:
    published_at = time.time()
    result = publish(client_app, "waiting", priority=4)

    found = locate(result.id)

    assert (found.queue, found.task_id, found.state) == (QUEUE, result.id, "ready")
    assert (found.priority, found.deliveries, found.owner) == (4, 0, None)
    assert found.published_at is not None
    assert abs(found.published_at.timestamp() - published_at) < 60


def test_find_locates_a_delayed_task_with_its_due_time(
    client_app: Celery, locate: Callable[[str], MessageLocation]
) -> None:
    published_at = time.time()
    result = publish(client_app, "later", countdown=60)

    found = locate(result.id)

    assert (found.state, found.owner) == ("delayed", None)
    assert found.due_at is not None and 50 < found.due_at.timestamp() - published_at < 70


def test_find_locates_an_in_flight_task_and_its_consumer(
    client_app: Celery,
    hold: Callable[..., HeldMessages],
    locate: Callable[[str], MessageLocation],
) -> None:
    result = publish(client_app, "running")
    consumer = hold()
    consumer.receive(1)

    found = locate(result.id)

    assert (found.state, found.owner, found.deliveries) == ("inflight", consumer.consumer_id, 1)


def test_find_locates_a_dead_letter_with_its_reason(
    client_app: Celery,
    hold: Callable[..., HeldMessages],
    locate: Callable[[str], MessageLocation],
) -> None:
    result = publish(client_app, "refused")
    [message] = hold().receive(1)
    message.reject(requeue=False)

    found = locate(result.id)

    assert (found.state, found.reason, found.owner) == ("dead", "rejected", None)


# -- queue_stats -----------------------------------------------------------------------------


def test_queue_stats_counts_each_state_and_ready_messages_by_priority(
    client_app: Celery, hold: Callable[..., HeldMessages], inspector: Operations
) -> None:
    consumer = hold()
    publish(client_app, "refused")
    consumer.receive(1)[0].reject(requeue=False)
    publish(client_app, "running")
    consumer.receive(2)
    for label, priority in [("p0-a", 0), ("p0-b", 0), ("p3", 3)]:
        publish(client_app, label, priority=priority)
    publish(client_app, "later", countdown=60)

    stats = wait_for(
        lambda: (s := inspector.queues.stats(QUEUE)).oldest_ready_age and s,
        timeout=5,
        message="the oldest ready message has no age",
    )

    assert stats.ready_by_priority == {0: 2, 3: 1}
    assert stats.ready == 3
    assert (stats.delayed, stats.inflight, stats.dead) == (1, 1, 1)
    assert stats.oldest_ready_age is not None and 0 < stats.oldest_ready_age < 60
    assert stats.oldest_inflight_age is not None and stats.oldest_inflight_age >= 0
    assert stats.next_due_at is not None and 50 < stats.next_due_at.timestamp() - time.time() <= 60
    assert stats.consumers == 1
    assert inspector.queues.names() == [QUEUE]


# -- remove ----------------------------------------------------------------------------------


def test_remove_deletes_waiting_tasks_for_good(
    client_app: Celery,
    inspector: Operations,
    start_worker: StartWorker,
    redis_client: redis.Redis,
    keyprefix: str,
) -> None:
    ready = publish(client_app, "removed-ready")
    delayed = publish(client_app, "removed-delayed", countdown=1)

    assert [(m.queue, m.state) for m in inspector.queues.remove(ready.id).removed] == [
        (QUEUE, "ready")
    ]
    assert [(m.queue, m.state) for m in inspector.queues.remove(delayed.id).removed] == [
        (QUEUE, "delayed")
    ]
    assert inspector.queues.find(ready.id) == [] and inspector.queues.find(delayed.id) == []
    with pytest.raises(NotFound):
        inspector.queues.remove(ready.id)
    [entry] = inspector.audit.entries(limit=1).items
    assert (entry.action, entry.target, entry.actor) == ("task.remove", delayed.id, "tests")

    # due no earlier than the removed delayed task: once it has run, that one would have too
    publish(client_app, "kept", countdown=1.5)
    start_worker(concurrency=1).wait_ready()
    wait_for(lambda: read_log(redis_client, keyprefix), timeout=30, message="kept never ran")
    assert [e["label"] for e in read_log(redis_client, keyprefix)] == ["kept"]
    stats = inspector.queues.stats(QUEUE)
    assert (stats.ready, stats.delayed, stats.inflight) == (0, 0, 0)


def test_remove_reports_an_in_flight_task_and_its_consumer_without_touching_it(
    client_app: Celery, hold: Callable[..., HeldMessages], inspector: Operations
) -> None:
    result = publish(client_app, "running")
    consumer = hold()
    [message] = consumer.receive(1)

    outcome = inspector.queues.remove(result.id)

    assert outcome.removed == []
    assert [(m.queue, m.owner) for m in outcome.in_flight] == [(QUEUE, consumer.consumer_id)]
    [found] = inspector.queues.find(result.id)
    assert (found.state, found.owner, found.deliveries) == ("inflight", consumer.consumer_id, 1)
    message.ack()  # its consumer still settles it normally
    assert inspector.queues.find(result.id) == []


# -- consumers and recovery ------------------------------------------------------------------


def test_consumers_lists_a_live_consumer_and_marks_it_stale_once_it_stops_beating(
    client_app: Celery, hold: Callable[..., HeldMessages], inspector: Operations
) -> None:
    publish(client_app, "running")
    consumer = hold()
    consumer.receive(1)

    [live] = inspector.workers.all()

    assert (live.consumer_id, live.pid, live.queues) == (consumer.consumer_id, os.getpid(), [QUEUE])
    assert live.hostname == socket.gethostname()
    assert live.state == "online"
    assert live.last_heartbeat is not None and time.time() - live.last_heartbeat.timestamp() < 30

    consumer.stop_heartbeat()

    wait_for(
        lambda: [c.state for c in inspector.workers.all()] == ["stale"],
        timeout=15,
        message=lambda: f"consumer never turned stale: {inspector.workers.all()}",
    )


def test_recover_stale_returns_each_message_once_when_two_run_at_once(
    client_app: Celery,
    hold: Callable[..., HeldMessages],
    inspector: Operations,
    redis_url: str,
    keyprefix: str,
) -> None:
    task_ids = sorted(publish(client_app, f"held{i}").id for i in range(3))
    consumer = hold(prefetch=3)
    messages = consumer.receive(3)
    consumer.stop_heartbeat()
    wait_for(
        lambda: [c.state for c in inspector.workers.all()] == ["stale"],
        timeout=15,
        message="consumer never turned stale",
    )
    recoverers = [operations_for(redis_url, keyprefix, **OPTIONS) for _ in range(2)]
    start = threading.Barrier(len(recoverers))
    results: list[Any] = []

    def recover(recoverer: Operations) -> None:
        start.wait()
        results.extend(recoverer.workers.recover_stale())

    threads = [threading.Thread(target=recover, args=(r,)) for r in recoverers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for recoverer in recoverers:
        recoverer.close()

    assert {r.consumer_id for r in results} == {consumer.consumer_id}
    assert sorted(t for r in results for t in r.returned) == task_ids
    assert [t for r in results for t in r.dead_lettered] == []
    for task_id in task_ids:
        [found] = inspector.queues.find(task_id)
        assert (found.state, found.owner, found.recoveries) == ("ready", None, 1)
    assert [w.state for w in inspector.workers.all()] == ["offline"]
    # the consumer that lost its leases cannot settle them any more
    messages[0].ack()
    assert inspector.queues.find(task_id_of(messages[0]))[0].state == "ready"


# -- pinned behaviour ------------------------------------------------------------------------


def test_a_message_consumed_without_acknowledgement_leaves_the_broker_at_delivery(
    client_app: Celery, hold: Callable[..., HeldMessages], inspector: Operations
) -> None:
    """``no_ack=True`` (used by kombu's reply consumers): delivered means done, at most once."""
    result = publish(client_app, "fire-and-forget")
    consumer = hold(no_ack=True)
    consumer.receive(1)

    wait_for(
        lambda: not inspector.queues.find(result.id),
        timeout=5,
        message=lambda: f"still in the broker: {inspector.queues.find(result.id)}",
    )
    consumer.close()
    stats = inspector.queues.stats(QUEUE)
    assert (stats.ready, stats.inflight) == (0, 0)


def test_a_worker_is_listed_under_its_node_name(
    start_worker: StartWorker, inspector: Operations
) -> None:
    name = f"named-{uuid.uuid4().hex[:6]}@%h"
    worker = start_worker(hostname=name, concurrency=1)
    worker.wait_ready()

    listed = wait_for(
        lambda: [c for c in inspector.workers.all("online") if c.pid == worker.pid],
        timeout=30,
        message="the worker never registered as a consumer",
    )

    assert {c.hostname for c in listed} == {name.replace("%h", socket.gethostname())}
