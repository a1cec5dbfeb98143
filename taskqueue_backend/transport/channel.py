"""The kombu channel: publishing, leasing and acknowledging through the Lua scripts.

Connection handling, fanout (PUB/SUB), bindings and Sentinel come from kombu's Redis
channel; this class replaces its list queues with the sorted-set layout of ``keys.py``.
Consuming is event driven: the channel waits with ``BLPOP`` on one wake-up token per
queue and, once woken, leases up to its free prefetch slots with one ``fetch.lua`` call.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import OrderedDict, deque
from time import monotonic
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps
from redis import Redis
from redis.exceptions import NoScriptError

from .. import lifecycle
from . import recovery, worker_info
from .batch import ScriptBatch
from .burying import DeadLetterMixin
from .heartbeat import Heartbeat
from .keys import GlobalKeys, QueueKeys
from .messages import MalformedMessage, for_delivery, now_ms, publish_fields
from .options import BrokerOptions
from .qos import LeaseQoS

logger = logging.getLogger(__name__)

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


class TaskQueueChannel(DeadLetterMixin, _ChannelBase):
    """Mixin placed before kombu's Redis channel (plain or Sentinel)."""

    QoS: Any = LeaseQoS
    Message: Any = Message

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.options = BrokerOptions.from_transport_options(
            self.connection.client.transport_options
        )
        self.max_priority = self.options.max_priority
        self.default_priority = self.options.default_priority
        self.consumer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:12]}"
        self._owner_pid = os.getpid()
        self._redis: Redis | None = None
        self._scripts: Any = None
        self._leases: dict[str, str] = {}
        self._held_queues: set[str] = set()
        self._no_ack_queues: set[str] = set()
        self._known_queues: set[str] = set()
        self._heartbeat: Heartbeat | None = None
        self._pending: tuple[str, Any, int] | None = None
        self._fetch_queue: deque[str] = deque()
        self._next_due: dict[str, int] = {}
        self._recent_dead: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._started_at = str(now_ms())

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
        if self._bury_if_marked(queue, message, fields):
            return
        call_keys = [keys.ready, keys.delayed, keys.ids, keys.signal, keys.state]
        call_args = [
            keys.base,
            uuid4().hex,
            dumps(message),
            fields["rank"],
            fields["task_id"],
            fields["due"],
            fields["expire_at"],
            fields["now"],
            fields["priority"],
        ]
        if batch is not None:
            batch.add_script("publish", call_keys, call_args)
        else:
            self.scripts["publish"](keys=call_keys, args=call_args, client=self.redis)
        self._remember_queue(queue)

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
        super()._new_queue(queue, auto_delete=auto_delete, **kwargs)  # type: ignore[misc]
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
        keys = self.queue_keys(queue)
        total, limit = 0, 1000
        while True:
            n = self.scripts["purge"](
                keys=[keys.ready, keys.delayed, keys.signal],
                args=[keys.base, limit],
                client=self.redis,
            )
            total += n
            if n < limit:
                return total

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

    # -- consuming -----------------------------------------------------------------------

    def _free_slots(self) -> int:
        estimate = self.qos.can_consume_max_estimate()
        if estimate is None:
            return self.options.fetch_limit
        return max(1, min(estimate, self.options.fetch_limit))

    def _fetch_call(
        self, queue: str, count: int, no_ack: bool = False
    ) -> tuple[list[str], list[Any]]:
        keys = self.queue_keys(queue)
        return (
            [keys.ready, keys.delayed, keys.inflight, keys.signal, keys.state],
            [
                keys.base,
                self.consumer_id,
                count,
                now_ms(),
                self.options.release_limit,
                "1" if no_ack else "0",
            ],
        )

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        tag = super().basic_consume(queue, no_ack, *args, **kwargs)
        if not no_ack:
            self._prepare_consumer(queue)  # an idle worker is in the registry too
        return tag

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        try:
            payload = self._get(queue, no_ack=no_ack)
        except Empty:
            return None
        message = self.Message(payload, channel=self)
        if not no_ack:
            self.qos.append(message, message.delivery_tag)
        return message

    def _prepare_consumer(self, queue: str) -> None:
        """Register this consumer (and the queue it leases from) before the first lease."""
        if queue in self._held_queues and self._heartbeat is not None:
            return
        self._held_queues.add(queue)
        recovery.register(
            self.redis,
            self.global_keyprefix,
            self.consumer_id,
            self._consumer_info(),
            self._held_queues,
        )
        if self._heartbeat is None:
            self._heartbeat = Heartbeat(
                Redis(connection_pool=self.pool),
                self.scripts,
                self.global_keyprefix,
                self.consumer_id,
                self.options,
                self._consumer_info,
                lambda: set(self._held_queues),
            )
            self._heartbeat.start()

    def _consumer_info(self) -> dict[str, str]:
        return {
            "hostname": worker_info.WORKER_NODENAME or socket.gethostname(),
            "pid": str(os.getpid()),
            "started_at": self._started_at,
            **worker_info.worker_stats(),
        }

    def _unpack(self, queue: str, reply: list[Any], no_ack: bool = False) -> list[dict[str, Any]]:
        """Turn a fetch reply into deliverable payloads; bury what cannot be decoded."""
        next_due, flat = reply
        if next_due:
            self._next_due[queue] = int(float(next_due))
        else:
            self._next_due.pop(queue, None)
        payloads = []
        for i in range(0, len(flat), 4):
            message_id = bytes_to_str(flat[i])
            body, deliveries = flat[i + 1], int(flat[i + 2])
            if not no_ack:
                self._leases[message_id] = queue
            try:
                payloads.append(for_delivery(body, message_id, deliveries, queue))
            except MalformedMessage as exc:
                if no_ack:
                    logger.error(
                        "dropped malformed message %s from no-ack queue %r: %s",
                        message_id,
                        queue,
                        exc,
                    )
                    continue
                logger.error("dead-lettered message %s from queue %r: %s", message_id, queue, exc)
                self.dead_letter(message_id, "malformed", str(exc))
        return payloads

    def _get(
        self, queue: str, timeout: float | None = None, no_ack: bool = False
    ) -> dict[str, Any]:
        if not no_ack:
            self._prepare_consumer(queue)
        keys, args = self._fetch_call(queue, 1, no_ack)
        payloads = self._unpack(
            queue, self.scripts["fetch"](keys=keys, args=args, client=self.redis), no_ack
        )
        if not payloads:
            raise Empty()
        return payloads[0]

    def _wait_seconds(self, timeout: float | None) -> float:
        wait = float(timeout if timeout else self.brpop_timeout or 1)
        if self._next_due:
            until = (min(self._next_due.values()) - now_ms()) / 1000
            wait = min(wait, max(until, 0.005))
        return round(wait, 3)

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        active = set(self.active_queues)
        while self._fetch_queue and self._fetch_queue[0] not in active:
            self._fetch_queue.popleft()
        connection = self.client.connection
        if self._fetch_queue:
            queue = self._fetch_queue[0]
            no_ack = queue in self._no_ack_queues
            if not no_ack:
                self._prepare_consumer(queue)
            # kombu's reply collection counts one message per drain_events() call
            count = 1 if no_ack else self._free_slots()
            if len(active) > 1 and self.queue_order_strategy == "round_robin":
                count = max(1, count // len(active))  # share the slots between the queues
            keys, args = self._fetch_call(queue, count, no_ack)
            command = ["EVALSHA", self.scripts.sha("fetch"), len(keys), *keys, *args]
            self._pending = ("fetch", queue, count)
        else:
            signals = {self.queue_keys(q).signal: q for q in queues}
            command = ["BLPOP", *signals, self._wait_seconds(timeout)]
            self._pending = ("wait", signals, 0)
        self._in_poll = connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        pending, self._pending = self._pending, None
        try:
            if pending is None:
                raise Empty()
            kind, target, count = pending
            command = "EVALSHA" if kind == "fetch" else "BLPOP"
            try:
                reply = self.client.parse_response(self.client.connection, command, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except NoScriptError:
                self.scripts.load_all()
                raise Empty() from None
            if kind == "wait":
                if reply:
                    queue = target[bytes_to_str(reply[0])]
                    self._queue_cycle.rotate(queue)
                    self._fetch_queue.append(queue)
                else:
                    # woken by the timeout: a delayed message may be due, or a token lost
                    self._fetch_queue.extend(target.values())
                raise Empty()
            self._fetch_queue.popleft()
            payloads = self._unpack(target, reply, target in self._no_ack_queues)
            if len(reply[1]) // 4 >= count and len(self.active_queues) == 1:
                self._fetch_queue.appendleft(target)  # likely more ready: skip the wait
            for payload in payloads:
                self.connection._deliver(payload, target)
            if not payloads:
                raise Empty()
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush_reauth = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.7
            if flush_reauth is not None:
                flush_reauth()

    # -- settling leases -----------------------------------------------------------------

    def _lease(self, delivery_tag: str) -> tuple[QueueKeys, str] | None:
        if os.getpid() != self._owner_pid:
            return None  # a forked child never settles its parent's leases
        queue = self._leases.pop(delivery_tag, None)
        if queue is None:
            return None
        return self.queue_keys(queue), delivery_tag

    def ack_lease(self, delivery_tag: str) -> None:
        lease = self._lease(delivery_tag)
        if lease is None:
            return
        keys, message_id = lease
        done = self.scripts["ack"](
            keys=[keys.inflight, keys.ids],
            args=[keys.base, message_id, self.consumer_id],
            client=self.redis,
        )
        if not done:
            logger.warning(
                "ack of message %s on %r ignored: this consumer no longer holds it "
                "(it was returned to the queue after a missed heartbeat)",
                message_id,
                keys.queue,
            )
        self._maybe_retire()

    def requeue_lease(self, delivery_tag: str, rejected: bool = False) -> None:
        lease = self._lease(delivery_tag)
        if lease is None:
            return
        keys, message_id = lease
        moved = self.scripts["requeue"](
            keys=[keys.ready, keys.inflight, keys.signal, keys.state],
            args=[keys.base, message_id, self.consumer_id],
            client=self.redis,
        )
        if moved and rejected:
            self._emit("rejected", delivery_tag, keys.queue, {"requeue": True})
        self._maybe_retire()

    def _emit(self, event: str, delivery_tag: str, queue: str, detail: dict[str, Any]) -> None:
        """Tell listeners in this process (the result backend's history) what happened."""
        message = self._qos._delivered.get(delivery_tag) if self._qos is not None else None
        headers = getattr(message, "headers", None) or {}
        task_id = str(headers.get("id") or "")
        lifecycle.emit(
            lifecycle.MessageEvent(event, task_id, queue, detail, worker_info.WORKER_NODENAME)
        )

    def _restore(self, message: Any, leftmost: bool = False) -> None:
        self.requeue_lease(message.delivery_tag)

    def _restore_at_beginning(self, message: Any) -> None:
        self.requeue_lease(message.delivery_tag)

    # -- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        if not self.closed and os.getpid() == self._owner_pid:
            self._hand_back()
        super().close()  # type: ignore[misc]

    def _hand_back(self) -> None:
        """Return every message this consumer still holds, then leave the registry.

        A fetch reply still in flight is not read (its messages would reach Celery while
        it shuts down); the script already ran, so those messages are held and go back
        with the rest.
        """
        self._in_poll = None  # type: ignore[assignment]
        if self._heartbeat is not None and self._qos is not None:
            try:
                self._qos.restore_unacked_once()
            except self.connection_errors as exc:
                logger.warning("could not restore unacked messages at shutdown: %s", exc)
        self._retire()

    def _maybe_retire(self) -> None:
        """A channel that stopped consuming and settled every lease stops heartbeating.

        (A client that once read an ``inspect`` reply is not a worker to watch.)
        """
        pending_fetch = self._pending is not None and self._pending[0] == "fetch"
        if (
            self._heartbeat is not None
            and not self._leases
            and not self.active_queues
            and not pending_fetch
            and os.getpid() == self._owner_pid
        ):
            self._retire()

    def _retire(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is None:
            return
        heartbeat.stop()
        try:
            returned = 0
            for queue in self._held_queues:
                back, _ = recovery.recover_queue(
                    self.scripts,
                    self.queue_keys(queue),
                    self.consumer_id,
                    self.options,
                    died=False,
                    client=self.redis,
                )
                returned += len(back)
            recovery.mark_offline(self.scripts, self.global_keyprefix, self.consumer_id,
                                  "stopped", returned=returned, client=self.redis)  # fmt: skip
            self._held_queues.clear()
        except self.connection_errors as exc:
            logger.warning(
                "could not hand back this consumer's messages (%s); they return "
                "to their queues after heartbeat_timeout=%ss",
                exc,
                self.options.heartbeat_timeout,
            )

    def _basic_cancel(self, consumer_tag: str) -> Any:
        result = super()._basic_cancel(consumer_tag)
        self._maybe_retire()
        return result


class Channel(TaskQueueChannel, kombu_redis.Channel):
    """Channel for ``redis://`` and ``rediss://`` URLs."""


class SentinelChannel(TaskQueueChannel, kombu_redis.SentinelChannel):
    """Channel for Redis Sentinel (``sentinel://`` URLs with ``master_name``)."""
