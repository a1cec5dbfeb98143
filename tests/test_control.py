"""Remote control, monitoring events and key hygiene, as with kombu's own Redis transport.

Stock Celery clients talk to real ``celery worker`` subprocesses: ``inspect`` (ping, active,
reserved), ``revoke``, ``shutdown`` and the event stream work unchanged. Remote-control replies
travel through short-lived reply queues declared with x-expires; these tests check that such
queues leave nothing behind, whether their client deletes them, dies, or a message in them was
returned, and that two brokers sharing one Redis database under different
``global_keyprefix`` values never see each other's tasks, workers or broadcasts.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from taskqueue_backend.operations import Operations
from tests.app import TRANSPORT, make_app, read_log
from tests.conftest import WORKERS_KEY
from tests.support import (
    REPO_ROOT,
    StartWorker,
    WorkerProcess,
    operations_for,
    wait_for,
    worker_command,
)
from tests.support.events import EventCollector

#: replies come back in milliseconds; the deadline only matters on an overloaded machine
REPLY_TIMEOUT = 10.0
REPLY_QUEUE_MARK = "reply.celery.pidbox"
#: x-expires (seconds) of the queues declared by the key hygiene tests
QUEUE_EXPIRES = 2.0
#: short heartbeats, so that a consumer that stops beating turns stale within a second
FAST_HEARTBEAT = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0}

#: key names this transport and kombu's binding tables create under a prefix (plus the
#: tests' own ``log`` list); anything else under the prefix is a leak
ALLOWED_KEY = re.compile(
    r"^(?:(?:\{tq\}:)?_kombu\.binding[._].+"
    r"|tq:\{[^}]+\}:(?:ready|delayed|inflight|dead|ids|signal|state|replaying|held:.+|m:.+)"
    r"|\{tq\}:(?:consumers|offline|queues|audit|consumer:.+|failed:.+)"
    r"|log)$"
)


def node_name(pattern: str) -> str:
    """The node name Celery gives a worker started with ``-n pattern``."""
    return pattern.replace("%h", socket.gethostname())


def keys_containing(client: redis.Redis, fragment: str) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(match=f"*{fragment}*", count=500))


def describe(client: redis.Redis, keys: list[str]) -> str:
    """Key names with their remaining time to live (-1: none)."""
    return ", ".join(f"{k} (ttl {client.pttl(k)} ms)" for k in keys)


def start_worker_env() -> dict[str, str]:
    """The environment ``start_worker`` gives its workers, minus the per-test settings."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath}


@pytest.fixture
def client_app(redis_url: str, keyprefix: str) -> Iterator[Celery]:
    app = make_app(redis_url, keyprefix)
    yield app
    app.close()
    app.pool.force_close_all()


@pytest.fixture
def inspector(redis_url: str, keyprefix: str) -> Iterator[Operations]:
    found = operations_for(redis_url, keyprefix)
    yield found
    found.close()


def live(ops: Operations) -> list[Any]:
    """The consumers that have not gone offline (online or stale)."""
    return [w for w in ops.workers.all() if w.state != "offline"]


@pytest.fixture
def start_monitored_worker(
    request: pytest.FixtureRequest,
    start_worker: StartWorker,
    redis_url: str,
    keyprefix: str,
    tmp_path: Path,
) -> Callable[[str], WorkerProcess]:
    """Start a worker that sends task events (``-E``) and ``worker-heartbeat`` events.

    ``start_worker`` passes ``--without-heartbeat``, which turns worker heartbeat events
    off; this starts the same command without that flag. The worker joins the list
    ``start_worker`` stops at teardown (and whose logs a failing test reports).
    """

    def start(hostname: str) -> WorkerProcess:
        command = [
            arg
            for arg in worker_command("tests.app", ("celery",), 1, "prefork", hostname, ("-E",))
            if arg != "--without-heartbeat"
        ]
        env = {
            **start_worker_env(),
            "TQ_TEST_REDIS_URL": redis_url,
            "TQ_TEST_KEYPREFIX": keyprefix,
        }
        worker = WorkerProcess(command, env, tmp_path / "monitored-worker.log", hostname)
        request.node.stash[WORKERS_KEY].append(worker)
        return worker.start()

    return start


# -- remote control ---------------------------------------------------------------------------


def test_ping_addressed_to_two_workers_returns_as_soon_as_both_answer(
    start_worker: StartWorker, client_app: Celery
) -> None:
    """Celery stops collecting after one reply per destination, as with kombu's transport.

    kombu counts one reply per ``drain_events`` call: a transport that hands several replies
    over in one call leaves the client waiting for the rest of its timeout.
    """
    names = [f"ping{i}-{uuid.uuid4().hex[:6]}@%h" for i in (1, 2)]
    workers = [start_worker(hostname=name, concurrency=1) for name in names]
    for worker in workers:
        worker.wait_ready()
    nodes = [node_name(n) for n in names]
    timeout = 8.0

    for _ in range(3):
        started = time.monotonic()
        replies = client_app.control.inspect(destination=nodes, timeout=timeout).ping()
        elapsed = time.monotonic() - started

        assert replies == {node: {"ok": "pong"} for node in nodes}
        assert elapsed < timeout / 2, f"waited {elapsed:.1f} s for replies already received"


def test_each_drain_events_call_hands_over_one_reply(redis_url: str, keyprefix: str) -> None:
    """The contract behind the test above, without timing: kombu's ``Mailbox._collect``
    counts replies by ``drain_events`` calls, so a call must deliver exactly one message."""
    name = f"replies-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), name, auto_delete=True, expires=10.0)
    options = {"global_keyprefix": keyprefix}
    with Connection(redis_url, transport=TRANSPORT, transport_options=options) as connection:
        channel = connection.channel()
        for n in (1, 2):
            Producer(channel).publish(
                {"n": n}, exchange=queue.exchange, routing_key=name, declare=[queue]
            )
        received: list[Any] = []
        with Consumer(channel, [queue], no_ack=True, callbacks=[lambda b, m: received.append(b)]):
            connection.drain_events(timeout=REPLY_TIMEOUT)
            assert received == [{"n": 1}]
            connection.drain_events(timeout=REPLY_TIMEOUT)
            assert received == [{"n": 1}, {"n": 2}]


def test_active_lists_the_running_task_and_reserved_the_one_waiting_behind_it(
    start_worker: StartWorker, client_app: Celery
) -> None:
    name = f"busy-{uuid.uuid4().hex[:6]}@%h"
    start_worker(hostname=name, concurrency=1).wait_ready()
    node = node_name(name)
    long = client_app.signature("tests.app.sleep_then_record", args=("long", 5.0)).delay()
    short = client_app.signature("tests.app.record", args=("short",)).delay()
    inspect = client_app.control.inspect(destination=[node], timeout=REPLY_TIMEOUT)

    def ids(listing: dict[str, list[dict[str, Any]]] | None) -> list[str]:
        return [task["id"] for task in (listing or {}).get(node, [])]

    running = wait_for(lambda: ids(inspect.active()), timeout=30, message="nothing active")
    waiting = wait_for(lambda: ids(inspect.reserved()), timeout=30, message="nothing reserved")

    assert running == [long.id]
    assert waiting == [short.id]


def test_a_revoked_task_waiting_behind_a_long_one_never_runs(
    start_worker: StartWorker,
    client_app: Celery,
    inspector: Operations,
    redis_client: redis.Redis,
    keyprefix: str,
) -> None:
    name = f"revoke-{uuid.uuid4().hex[:6]}@%h"
    worker = start_worker(hostname=name, concurrency=1)
    worker.wait_ready()
    node = node_name(name)
    client_app.signature("tests.app.sleep_then_record", args=("long", 5.0)).delay()
    doomed = client_app.signature("tests.app.record", args=("doomed",)).delay()
    inspect = client_app.control.inspect(destination=[node], timeout=REPLY_TIMEOUT)
    wait_for(
        lambda: any(t["id"] == doomed.id for t in (inspect.reserved() or {}).get(node, [])),
        timeout=30,
        message="the second task was never reserved behind the long one",
    )

    acknowledged = client_app.control.revoke(
        doomed.id, destination=[node], reply=True, timeout=REPLY_TIMEOUT
    )

    assert acknowledged and "revoked" in acknowledged[0][node]["ok"]
    wait_for(lambda: read_log(redis_client, keyprefix), timeout=30, message="long task never ran")
    # discarding a revoked task acknowledges its message: it leaves the broker
    wait_for(
        lambda: not inspector.queues.find(doomed.id), timeout=30, message="revoked task not settled"
    )
    assert [e["label"] for e in read_log(redis_client, keyprefix)] == ["long"]
    assert "Discarding revoked task" in worker.log_text()


def test_shutdown_stops_the_worker_and_it_leaves_the_consumer_registry(
    start_worker: StartWorker, client_app: Celery, inspector: Operations
) -> None:
    worker = start_worker(hostname=f"down-{uuid.uuid4().hex[:6]}@%h", concurrency=1)
    worker.wait_ready()
    wait_for(
        lambda: any(c.pid == worker.pid for c in live(inspector)),
        timeout=30,
        message="the worker never registered as a consumer",
    )

    client_app.control.shutdown()

    wait_for(lambda: not worker.running, timeout=30, message="worker still running")
    assert worker.process.returncode == 0
    assert "Got shutdown from remote" in worker.log_text()
    assert not [c for c in live(inspector) if c.pid == worker.pid]


# -- events -----------------------------------------------------------------------------------


def test_an_event_receiver_sees_task_and_worker_heartbeat_events(
    start_monitored_worker: Callable[[str], WorkerProcess], client_app: Celery
) -> None:
    collector = EventCollector(client_app).start()
    try:
        node = node_name(f"events-{uuid.uuid4().hex[:6]}@%h")
        start_monitored_worker(node).wait_ready()
        # a heartbeat seen proves the receiver is subscribed before the task is sent
        wait_for(
            lambda: "worker-heartbeat" in collector.types_for(hostname=node),
            timeout=30,
            message="no worker-heartbeat event",
        )

        result = client_app.signature("tests.app.record", args=("watched",)).delay()

        expected = {"task-received", "task-started", "task-succeeded"}
        seen = wait_for(
            lambda: expected <= collector.types_for(uuid=result.id) and expected,
            timeout=30,
            message=lambda: f"task events seen: {collector.types_for(uuid=result.id)}",
        )
        assert seen == expected
    finally:
        collector.stop()


# -- key hygiene ------------------------------------------------------------------------------


def test_remote_control_leaves_no_reply_queue_or_unknown_key_behind(
    start_worker: StartWorker,
    client_app: Celery,
    inspector: Operations,
    redis_client: redis.Redis,
    keyprefix: str,
) -> None:
    name = f"tidy-{uuid.uuid4().hex[:6]}@%h"
    start_worker(hostname=name, concurrency=1).wait_ready()
    node = node_name(name)
    client_app.signature("tests.app.record", args=("one",)).delay()
    inspect = client_app.control.inspect(destination=[node], timeout=REPLY_TIMEOUT)
    for _ in range(3):
        assert inspect.ping() == {node: {"ok": "pong"}}
    assert node in (inspect.stats() or {})
    assert node in (inspect.registered() or {})
    assert inspect.active() == {node: []}
    # a broadcast waits for its whole timeout before it deletes its reply queue
    assert client_app.control.inspect(timeout=1.0).ping() == {node: {"ok": "pong"}}

    def reply_keys() -> list[str]:
        return [k for k in keys_containing(redis_client, keyprefix) if REPLY_QUEUE_MARK in k]

    wait_for(lambda: not reply_keys(), timeout=20, message=lambda: f"left: {reply_keys()}")
    keys = keys_containing(redis_client, keyprefix)
    assert all(k.startswith(keyprefix) for k in keys), keys
    unknown = [k for k in keys if not ALLOWED_KEY.match(k[len(keyprefix) :])]
    assert unknown == []
    assert not [q for q in inspector.queues.names() if REPLY_QUEUE_MARK in q]


KILLED_CLIENT = """
import json, sys
from tests.app import make_app
app = make_app(sys.argv[1], sys.argv[2])
app.conf.control_queue_expires = float(sys.argv[3])
app.control.broadcast(
    "ping", reply=True, timeout=60, callback=lambda reply: print("reply", reply, flush=True)
)
"""


def test_a_client_killed_while_collecting_replies_leaves_nothing_once_its_queue_expires(
    start_worker: StartWorker,
    redis_url: str,
    redis_client: redis.Redis,
    keyprefix: str,
    tmp_path: Path,
) -> None:
    """A client that dies never deletes its reply queue: its x-expires must do it."""
    expires = 3.0
    start_worker(concurrency=1).wait_ready()
    output = tmp_path / "client.out"
    with open(output, "wb") as out:
        client = subprocess.Popen(
            [sys.executable, "-c", KILLED_CLIENT, redis_url, keyprefix, str(expires)],
            cwd=REPO_ROOT,
            env=start_worker_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: "reply" in output.read_text() or client.poll() is not None,
            timeout=30,
            message="the client never received a reply",
        )
        assert client.poll() is None, output.read_text()
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait()

    def reply_queue_keys() -> list[str]:
        # kombu's own binding table of the reply exchange is swept by kombu, after an hour
        return [
            k
            for k in keys_containing(redis_client, keyprefix)
            if REPLY_QUEUE_MARK in k and k.startswith(f"{keyprefix}tq:")
        ]

    assert reply_queue_keys()  # the queue outlived its client...
    wait_for(  # ...until its x-expires
        lambda: not reply_queue_keys(),
        timeout=expires + 15,
        message=lambda: (
            "reply queue keys outlived its x-expires: " + describe(redis_client, reply_queue_keys())
        ),
    )


@pytest.fixture
def expiring_queue(
    redis_url: str, keyprefix: str
) -> Iterator[tuple[Connection, Queue, Operations]]:
    """A plain kombu connection and a queue declared with x-expires (as reply queues are)."""
    options = {"global_keyprefix": keyprefix, **FAST_HEARTBEAT}
    connection = Connection(redis_url, transport=TRANSPORT, transport_options=options)
    name = f"expiring-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), name, expires=QUEUE_EXPIRES)
    found = operations_for(redis_url, keyprefix, **FAST_HEARTBEAT)
    yield connection, queue, found
    connection.release()
    found.close()


def receive_one(connection: Connection, queue: Queue) -> tuple[Consumer, Message]:
    """Publish one message to ``queue`` and lease it to a consumer that does not ack it."""
    channel = connection.channel()
    Producer(channel).publish(
        {"n": 1}, exchange=queue.exchange, routing_key=queue.name, declare=[queue]
    )
    received: list[Message] = []
    consumer = Consumer(channel, [queue], callbacks=[lambda body, m: received.append(m)])
    consumer.consume()

    def arrived() -> bool:
        try:
            connection.drain_events(timeout=0.2)
        except TimeoutError:
            pass
        return bool(received)

    wait_for(arrived, timeout=20, interval=0, message="the message never arrived")
    return consumer, received[0]


def queue_keys_of(redis_client: redis.Redis, keyprefix: str, queue: Queue) -> list[str]:
    return keys_containing(redis_client, f"{keyprefix}tq:{{{queue.name}}}")


def test_an_expiring_queue_whose_message_was_requeued_still_expires(
    expiring_queue: tuple[Connection, Queue, Operations],
    redis_client: redis.Redis,
    keyprefix: str,
) -> None:
    connection, queue, _ = expiring_queue
    consumer, message = receive_one(connection, queue)

    message.requeue()
    consumer.cancel()

    assert queue_keys_of(redis_client, keyprefix, queue)
    wait_for(
        lambda: not queue_keys_of(redis_client, keyprefix, queue),
        timeout=QUEUE_EXPIRES + 8,
        message=lambda: (
            "keys outlived the queue's x-expires: "
            + describe(redis_client, queue_keys_of(redis_client, keyprefix, queue))
        ),
    )


def test_an_expiring_queue_whose_consumer_died_holding_a_message_still_expires(
    expiring_queue: tuple[Connection, Queue, Operations],
    redis_client: redis.Redis,
    keyprefix: str,
) -> None:
    connection, queue, inspector = expiring_queue
    consumer, _ = receive_one(connection, queue)
    consumer.channel._heartbeat.stop()  # the broker now sees a dead consumer
    wait_for(
        lambda: [c.state for c in live(inspector)] == ["stale"],
        timeout=15,
        message="the consumer never turned stale",
    )

    [recovered] = inspector.workers.recover_stale()

    assert len(recovered.returned) == 1
    wait_for(
        lambda: not queue_keys_of(redis_client, keyprefix, queue),
        timeout=QUEUE_EXPIRES + 8,
        message=lambda: (
            "keys outlived the queue's x-expires: "
            + describe(redis_client, queue_keys_of(redis_client, keyprefix, queue))
        ),
    )


# -- global_keyprefix isolation ---------------------------------------------------------------


def test_two_prefixes_on_one_database_share_nothing(
    start_worker: StartWorker, redis_url: str, redis_client: redis.Redis, keyprefix: str
) -> None:
    prefixes = {"a": keyprefix, "b": f"b-{keyprefix}"}  # both contain the fixture's prefix
    queue = f"iso-{uuid.uuid4().hex[:10]}"  # the same queue name under both prefixes
    names = {side: f"iso{side}-{uuid.uuid4().hex[:6]}@%h" for side in prefixes}
    workers = {
        side: start_worker(
            queues=(queue,),
            concurrency=1,
            hostname=names[side],
            env={"TQ_TEST_KEYPREFIX": prefixes[side]},
        )
        for side in prefixes
    }
    apps = {side: make_app(redis_url, prefix) for side, prefix in prefixes.items()}
    try:
        for worker in workers.values():
            worker.wait_ready()
        for side, app in apps.items():
            for i in range(3):
                app.signature("tests.app.record", args=(f"{side}{i}",)).apply_async(queue=queue)

        for side, prefix in prefixes.items():
            wait_for(
                lambda prefix=prefix: len(read_log(redis_client, prefix)) >= 3,
                timeout=30,
                message=f"tasks published under prefix {side} did not run",
            )
        for side, prefix in prefixes.items():
            assert sorted(e["label"] for e in read_log(redis_client, prefix)) == [
                f"{side}{i}" for i in range(3)
            ]
        # broadcasts stay under their prefix too
        assert apps["a"].control.inspect(timeout=2.0).ping() == {
            node_name(names["a"]): {"ok": "pong"}
        }
    finally:
        for app in apps.values():
            app.close()
            app.pool.force_close_all()

    # every key naming the queue carries one of the two prefixes, and each prefix has its own
    queue_keys = keys_containing(redis_client, queue)
    assert queue_keys
    assert all(k.startswith(tuple(prefixes.values())) for k in queue_keys), queue_keys
    for prefix in prefixes.values():
        assert any(k.startswith(f"{prefix}tq:{{{queue}}}:") for k in queue_keys)
    # the unprefixed registries know nothing of this test's queue or processes
    assert not redis_client.sismember("{tq}:queues", queue)
    pids = {str(w.pid) for w in workers.values()} | {str(os.getpid())}
    unprefixed = [c.decode() for c in redis_client.zrange("{tq}:consumers", 0, -1)]
    assert not [c for c in unprefixed if c.split(":")[-2] in pids]
    inspectors = {side: operations_for(redis_url, prefix) for side, prefix in prefixes.items()}
    try:
        for side, found in inspectors.items():
            other = "b" if side == "a" else "a"
            listed = {c.pid for c in live(found)}
            assert workers[side].pid in listed
            assert workers[other].pid not in listed
    finally:
        for found in inspectors.values():
            found.close()
