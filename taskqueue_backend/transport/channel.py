"""The kombu channel: publishing and queue management through the Lua scripts.

Connection handling, fanout (PUB/SUB), bindings and Sentinel come from kombu's Redis
channel; this class replaces its list queues with the sorted-set layout of ``keys.py``.
Consuming (``consuming.py``), the registry (``membership.py``) and dead-lettering
(``burying.py``) are mixed in.
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps
from redis import Redis

from ..clock import now_ms
from .batch import ScriptBatch, ask_replicas, check_replicas
from .burying import DeadLetterMixin
from .consuming import ConsumingMixin
from .keys import GlobalKeys, QueueKeys
from .membership import MembershipMixin
from .messages import publish_call, publish_fields
from .options import BrokerOptions
from .qos import LeaseQoS

Empty = virtual.Empty


class Message(virtual.Message):
    """A delivered message that remembers why it could not be decoded."""

    tq_decode_error: Exception | None = None

    def decode(self) -> Any:
        try:
            return super().decode()
        except Exception as exc:
            self.tq_decode_error = exc
            raise


if TYPE_CHECKING:
    _ChannelBase = kombu_redis.Channel
else:
    _ChannelBase = object


class TaskQueueChannel(ConsumingMixin, MembershipMixin, DeadLetterMixin, _ChannelBase):
    """Mixin placed before kombu's Redis channel (plain or Sentinel)."""

    QoS: Any = LeaseQoS
    Message: Any = Message

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options = BrokerOptions.from_transport_options(
            self.connection.client.transport_options
        )
        self.max_priority = self.options.max_priority
        self.default_priority = self.options.default_priority
        self.consumer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:12]}"
        self._owner_pid = os.getpid()
        self._redis: Redis | None = None
        self._scripts: Any = None
        self._known_queues: set[str] = set()
        self._recent_dead: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._init_consuming()
        self._init_membership()

    # -- clients -------------------------------------------------------------------------

    @property
    def redis(self) -> Redis:
        """A client without kombu's key prefixing: our key names carry the prefix.

        After the channel closed (e.g. Celery reconnected after losing the broker), late
        acks of its messages still go through the last pool, which reconnects on use.
        """
        if self.connection is None and self._redis is not None:
            return self._redis
        pool = self.pool
        if self._redis is None or self._redis.connection_pool is not pool:
            from .scripts import Scripts

            self._redis = Redis(connection_pool=pool)
            self._scripts = Scripts(self._redis)
        return self._redis

    @property
    def scripts(self) -> Any:
        self.redis  # noqa: B018 - binds the scripts to the current pool
        return self._scripts

    def queue_keys(self, queue: str) -> QueueKeys:
        return QueueKeys(self.global_keyprefix, queue)

    # -- publishing ----------------------------------------------------------------------

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        batch: ScriptBatch | None = kwargs.pop("_publish_batch", None)
        fields = publish_fields(message, self.options)
        keys = self.queue_keys(queue)
        call_keys, call_args = publish_call(keys, uuid4().hex, dumps(message), fields)
        if batch is not None:
            batch.add_script("publish", call_keys, call_args)
        elif self.options.wait_for_replicas:
            self._publish_replicated(call_keys, call_args)
        else:
            self.scripts["publish"](keys=call_keys, args=call_args, client=self.redis)
        self._remember_queue(queue)

    def _publish_replicated(self, call_keys: list[str], call_args: list[Any]) -> None:
        """Publish, then ``WAIT`` for the replicas in the same pipeline (one connection)."""
        pipe = self.redis.pipeline(transaction=False)
        self.scripts["publish"](keys=call_keys, args=call_args, client=pipe)
        ask_replicas(self, pipe)
        check_replicas(self, pipe.execute()[-1])

    def create_publish_batch(self, max_size: int) -> ScriptBatch:
        return ScriptBatch(self, max_size)

    @property
    def supports_batch_publish(self) -> bool:
        return True

    def _remember_queue(self, queue: str) -> None:
        if queue not in self._known_queues:
            self.redis.sadd(GlobalKeys(self.global_keyprefix).queues, queue)
            self._known_queues.add(queue)

    # -- queues --------------------------------------------------------------------------

    def _new_queue(self, queue: str, auto_delete: bool = False, **kwargs: Any) -> None:
        super()._new_queue(queue, auto_delete=auto_delete, **kwargs)
        keys = self.queue_keys(queue)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hsetnx(keys.state, "declared_at", now_ms())
        expires = self._expires.get(queue)
        if expires is not None:
            pipe.hset(keys.state, "expires", expires)
            pipe.pexpire(keys.state, expires)
        else:
            pipe.hdel(keys.state, "expires")
        if not auto_delete:  # reply and pidbox queues come and go; not worth listing
            pipe.sadd(GlobalKeys(self.global_keyprefix).queues, queue)
            self._known_queues.add(queue)
        pipe.execute()

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        keys = self.queue_keys(queue)
        return bool(self.redis.exists(keys.state, keys.ready, keys.delayed, keys.inflight))

    def _size(self, queue: str) -> int:
        keys = self.queue_keys(queue)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.ready)
        pipe.zcard(keys.delayed)
        return sum(pipe.execute())

    def _purge(self, queue: str) -> int:
        """Delete the queue's waiting messages, ready and delayed (``celery purge``); messages
        in flight stay with their consumers and dead letters stay for an operator."""
        return purge_waiting(self.scripts, self.redis, self.queue_keys(queue))

    def _delete(
        self, queue: str, exchange: str, routing_key: str, pattern: str, *args: Any, **kwargs: Any
    ) -> None:
        self.auto_delete_queues.discard(queue)
        member = self.sep.join([routing_key or "", pattern or "", queue or ""])
        with self.conn_or_acquire(client=kwargs.get("client")) as client:
            client.srem(self.keyprefix_queue % (exchange,), member)
            permanent = getattr(self, "keyprefix_binding_permanent", None)  # kombu >= 5.7
            if permanent:
                client.srem(permanent % (exchange,), member)
        keys = self.queue_keys(queue)
        self.scripts["delete"](
            keys=[keys.ready, keys.delayed, keys.inflight, keys.ids, keys.signal, keys.state],
            args=[keys.base],
            client=self.redis,
        )
        self.redis.srem(GlobalKeys(self.global_keyprefix).queues, queue)
        self._known_queues.discard(queue)

    # -- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        if not self.closed and os.getpid() == self._owner_pid:
            self._hand_back()
        super().close()


def purge_waiting(
    scripts: Any, client: Redis, keys: QueueKeys, include_delayed: bool = True
) -> int:
    """Delete a queue's ready (and delayed) messages, 1,000 per script call; how many went."""
    total, limit = 0, 1000
    while True:
        n = scripts["purge"](
            keys=[keys.ready, keys.delayed, keys.signal],
            args=[keys.base, limit, "1" if include_delayed else "0"],
            client=client,
        )
        total += n
        if n < limit:
            return total


class Channel(TaskQueueChannel, kombu_redis.Channel):
    """Channel for ``redis://`` and ``rediss://`` URLs."""


class SentinelChannel(TaskQueueChannel, kombu_redis.SentinelChannel):
    """Channel for Redis Sentinel (``sentinel://`` URLs with ``master_name``)."""
