"""``producer.batch()`` on this transport: a burst is sent in chunks on one connection, each
chunk's replies read before the next is sent and all of them before the batch's context ends.

What the producer is promised: when the context ends without an error every message is stored,
in the order published; a command that failed makes the batch raise, naming the delivery as
uncertain, while the commands sent with it still ran; scripts the server lost meanwhile are
loaded again; with ``wait_for_replicas`` the replicas' confirmation is checked for every chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kombu
import pytest
import redis

from taskqueue_backend.embedded import EmbeddedRedis
from taskqueue_backend.transport.batch import BatchPublishError, NotReplicated
from tests.app import TRANSPORT


def connect(url: str, keyprefix: str, **options: Any) -> kombu.Connection:
    return kombu.Connection(
        url, transport=TRANSPORT, transport_options={"global_keyprefix": keyprefix, **options}
    )


def drain(connection: kombu.Connection, name: str) -> list[int]:
    """Every message of queue ``name``, in delivery order (each acknowledged)."""
    queue = connection.SimpleQueue(name)
    got = []
    try:
        while True:
            message = queue.get(timeout=0.5)
            got.append(message.payload["n"])
            message.ack()
    except queue.Empty:
        return got
    finally:
        queue.close()


def burst(connection: kombu.Connection, name: str, numbers: range, max_size: int) -> None:
    queue = connection.SimpleQueue(name)
    try:
        with queue.producer.batch(max_size=max_size):
            for n in numbers:
                queue.put({"n": n})
    finally:
        queue.close()


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A server of this test's own: it flushes the server's scripts."""
    with EmbeddedRedis() as server:
        yield server


def test_a_burst_of_several_chunks_is_stored_whole_and_in_order_when_the_batch_ends(
    redis_url: str, keyprefix: str, redis_client: redis.Redis
) -> None:
    with connect(redis_url, keyprefix) as connection:
        burst(connection, "burst", range(450), max_size=100)
        ready = redis_client.zcard(f"{keyprefix}tq:{{burst}}:ready")
        assert ready == 450, "every message is stored when the batch's context ends"
        assert drain(connection, "burst") == list(range(450))


def test_scripts_lost_by_the_server_are_loaded_again_and_nothing_is_lost(
    own_redis: EmbeddedRedis, keyprefix: str
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    with connect(own_redis.url, keyprefix) as connection:
        queue = connection.SimpleQueue("flushed")
        try:
            with queue.producer.batch(max_size=50):
                for n in range(120):
                    if n in (0, 70):  # before the first chunk and between two
                        client.script_flush()
                    queue.put({"n": n})
        finally:
            queue.close()
        assert sorted(drain(connection, "flushed")) == list(range(120))


def to_broken(producer: kombu.Producer, queue: kombu.Queue) -> None:
    producer.publish({"n": 100}, exchange=queue.exchange, routing_key="broken", declare=[queue])


def test_a_failed_command_says_the_delivery_is_uncertain_and_its_chunk_landed(
    redis_url: str, keyprefix: str, redis_client: redis.Redis
) -> None:
    # a queue whose wake-up list is not a list: its publish script fails
    redis_client.set(f"{keyprefix}tq:{{broken}}:signal", "not a list")
    with connect(redis_url, keyprefix) as connection:
        good, broken = connection.SimpleQueue("good"), connection.SimpleQueue("broken")
        try:
            with pytest.raises(BatchPublishError, match="delivery is uncertain"):
                with good.producer.batch(max_size=4):
                    for n in range(10):
                        good.put({"n": n})
                        if n == 5:  # in the same batch, to the broken queue
                            to_broken(good.producer, broken.queue)
        finally:
            good.close()
            broken.close()
        landed = drain(connection, "good")
        # the chunk holding the failed command ran whole; what came after may not have been sent
        assert landed == list(range(len(landed))) and len(landed) >= 7, landed


def test_a_chunk_the_replicas_did_not_confirm_raises_not_replicated(
    redis_url: str, keyprefix: str
) -> None:
    # the shared server has no replica: WAIT answers 0 after its timeout
    with connect(redis_url, keyprefix, wait_for_replicas=1, wait_for_replicas_timeout=0.05) as c:
        with pytest.raises(NotReplicated, match="0 of the 1 replica"):
            burst(c, "unreplicated", range(30), max_size=10)
    with connect(redis_url, keyprefix) as connection:
        # published on the primary all the same, up to the chunk that was not confirmed
        assert drain(connection, "unreplicated") == list(range(10))
