"""Consuming on the channel: leasing in batches, delivering, settling leases, handing back.

Consuming is event driven: the channel waits with ``BLPOP`` on one wake-up token per queue
and, once woken, leases up to its free prefetch slots with one ``fetch.lua`` call. A Celery
worker's event loop gets the whole batch at once. ``Connection.drain_events()`` hands over one
message per call, as kombu's virtual transports do: the rest of the batch stays buffered in the
channel (still leased to this consumer) and is handed over by the next calls, or returned to
its queue when the consumer is cancelled or the channel closes.

In the event loop, acknowledgements made by the loop's thread are collected and settled once
per turn of the loop, before it waits again (``LeasePoller``): they ride on the next fetch of
their queue when one is sent in that turn, else go in one ``ack.lua`` call per queue. Outside
the event loop (``drain_events()``, other threads) an acknowledgement is settled at once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING, Any

from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from redis import Redis
from redis.exceptions import NoScriptError

from .. import lifecycle, worker_info
from ..clock import now_ms
from ..vocabulary import DeadLetterReason
from .keys import QueueKeys
from .messages import Leased, MalformedMessage, for_delivery
from .options import BrokerOptions

logger = logging.getLogger(__name__)

Empty = virtual.Empty
#: fields per message in a fetch reply: id, body, deliveries, published_at, replays,
#: replayed_at
FETCH_STRIDE = 6
#: the detail fetch.lua gives an expired message's dead letter
EXPIRED_DETAIL = "message TTL passed before delivery"
#: at most this many acknowledgements in one script call (Lua's unpack() has a limit)
ACK_BATCH = 1000


class ConsumingMixin:
    """The channel's consuming side (mixed into ``channel.TaskQueueChannel``)."""

    options: BrokerOptions
    consumer_id: str
    global_keyprefix: str
    _owner_pid: int
    _closing: bool
    _handed_back: int

    if TYPE_CHECKING:  # provided by the channel and by kombu's Redis channel
        connection: Any
        client: Any
        pool: Any
        qos: Any
        _qos: Any
        _queue_cycle: Any
        _tag_to_queue: dict[str, str]
        queue_order_strategy: str
        brpop_timeout: float
        connection_errors: tuple[type[BaseException], ...]
        active_queues: list[str]
        _in_poll: Any
        _brpop_sent_at: Any

        @property
        def redis(self) -> Redis: ...

        @property
        def scripts(self) -> Any: ...

        def queue_keys(self, queue: str) -> QueueKeys: ...

        def dead_letter(self, delivery_tag: str, reason: str, detail: str) -> None: ...

        def Message(self, payload: Any, channel: Any = None) -> Any: ...  # noqa: N802

        def _prepare_consumer(self, queue: str) -> None: ...

        def _maybe_retire(self) -> None: ...

    def _init_consuming(self) -> None:
        self._leases: dict[str, str] = {}  # message id -> queue, for every lease held
        self._no_ack_queues: set[str] = set()
        self._pending: tuple[str, Any, int] | None = None
        self._fetch_queue: deque[str] = deque()
        self._next_due: dict[str, int] = {}
        self._buffered: deque[tuple[dict[str, Any], str]] = deque()
        self._acks: dict[str, list[str]] = {}  # queue -> message ids to acknowledge
        self._riding: dict[str, list[str]] = {}  # queue -> acknowledgements sent with a fetch

    # -- consuming ----------------------------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        tag = super().basic_consume(queue, no_ack, *args, **kwargs)  # type: ignore[misc]
        if not no_ack:
            self._prepare_consumer(queue)  # an idle worker is in the registry too
        return tag

    # -- fetching --------------------------------------------------------------------------

    def _free_slots(self) -> int:
        estimate = self.qos.can_consume_max_estimate()
        if estimate is None:
            return self.options.fetch_limit
        return max(1, min(estimate - len(self._buffered), self.options.fetch_limit))

    def _fetch_call(
        self, queue: str, count: int, no_ack: bool = False, with_acks: bool = True
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of a fetch; the queue's collected acknowledgements ride on
        it (kept in ``_riding`` until its reply is read) unless ``with_acks`` is false."""
        keys = self.queue_keys(queue)
        acks: list[str] = []
        if with_acks and queue in self._acks:
            pending = self._acks[queue]
            acks, rest = pending[:ACK_BATCH], pending[ACK_BATCH:]
            if rest:
                self._acks[queue] = rest  # settled by the turn's flush
            else:
                del self._acks[queue]
        if acks:
            self._riding.setdefault(queue, []).extend(acks)
        return (
            [keys.ready, keys.delayed, keys.inflight, keys.signal, keys.state],
            [keys.base, self.consumer_id, count, now_ms(), self.options.release_limit,
             "1" if no_ack else "0", *acks],
        )  # fmt: skip

    def _fetch_command(self, queue: str, with_acks: bool = True) -> tuple[list[Any], int]:
        """The ``EVALSHA`` of a fetch from ``queue`` (its consumer registered first), and how
        many messages it asks for."""
        no_ack = queue in self._no_ack_queues
        if not no_ack:
            self._prepare_consumer(queue)
        count = self._fetch_count(queue)
        keys, args = self._fetch_call(queue, count, no_ack, with_acks)
        return ["EVALSHA", self.scripts.sha("fetch"), len(keys), *keys, *args], count

    def _unpack(self, queue: str, reply: list[Any], no_ack: bool = False) -> list[dict[str, Any]]:
        """Turn a fetch reply into deliverable payloads; bury what cannot be decoded."""
        next_due, flat, expired, lost = reply
        self._riding.pop(queue, None)
        if lost:
            self._warn_lost(queue, lost)
        if expired:
            self._announce_expired(queue, expired)
        if next_due:
            self._next_due[queue] = int(float(next_due))
        else:
            self._next_due.pop(queue, None)
        payloads = []
        for i in range(0, len(flat), FETCH_STRIDE):
            published = bytes_to_str(flat[i + 3])
            replayed = bytes_to_str(flat[i + 5])
            leased = Leased(
                message_id=bytes_to_str(flat[i]),
                body=flat[i + 1],
                deliveries=int(flat[i + 2]),
                published_at_ms=int(published) if published else None,
                replays=int(flat[i + 4] or 0),
                replayed_at_ms=int(replayed) if replayed else None,
            )
            if not no_ack:
                self._leases[leased.message_id] = queue
            try:
                payloads.append(for_delivery(leased, queue))
            except MalformedMessage as exc:
                if no_ack:
                    logger.error("dropped malformed message %s from no-ack queue %r: %s",
                                 leased.message_id, queue, exc)  # fmt: skip
                    continue
                logger.error("dead-lettered message %s from queue %r: %s",
                             leased.message_id, queue, exc)  # fmt: skip
                self.dead_letter(leased.message_id, DeadLetterReason.MALFORMED, str(exc))
        return payloads

    def _announce_expired(self, queue: str, flat: list[Any]) -> None:
        """Messages the fetch found expired went to the dead letters: tell the listeners (the
        result backend records them REVOKED, as a stock worker that received one would)."""
        events = []
        for i in range(0, len(flat) - 1, 2):
            message_id = bytes_to_str(flat[i])
            try:
                payload = json.loads(flat[i + 1])
            except (ValueError, UnicodeDecodeError):
                payload = {}
            headers = payload.get("headers") if isinstance(payload, dict) else None
            task_id = str((headers or {}).get("id") or "")
            logger.warning("message %s of task %s from queue %r dead-lettered: expired before "
                           "delivery", message_id, task_id or "?", queue)  # fmt: skip
            events.append(lifecycle.MessageEvent(
                lifecycle.DEAD_LETTERED, task_id, queue,
                {"reason": DeadLetterReason.EXPIRED, "detail": EXPIRED_DETAIL},
                worker_info.WORKER_NODENAME, message=payload if isinstance(payload, dict) else None,
            ))  # fmt: skip
        lifecycle.emit_all(events)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        try:
            payload = self._get(queue, no_ack=no_ack)
        except Empty:
            return None
        message = self.Message(payload, channel=self)
        if not no_ack:
            self.qos.append(message, message.delivery_tag)
        return message

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

    def _wait_seconds(self, timeout: float | None, queue: str | None = None) -> float:
        """How long a wait may block: until the earliest delayed message (of ``queue``, or
        of every queue) is due, at most ``timeout`` or ``brpop_timeout``."""
        wait = float(timeout if timeout else self.brpop_timeout or 1)
        due = list(self._next_due.values()) if queue is None else (
            [self._next_due[queue]] if queue in self._next_due else [])  # fmt: skip
        if due:
            until = (min(due) - now_ms()) / 1000
            wait = min(wait, max(until, 0.005))
        return round(wait, 3)

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues or self._buffered:
            return
        active = set(self.active_queues)
        while self._fetch_queue and self._fetch_queue[0] not in active:
            self._fetch_queue.popleft()
        connection = self.client.connection
        if self._fetch_queue:
            queue = self._fetch_queue[0]
            if self._fetch_deferred(queue):
                return  # the next turn of the loop asks again
            command, count = self._fetch_command(queue)
            self._pending = ("fetch", queue, count)
        else:
            signals = {self.queue_keys(q).signal: q for q in queues}
            wait = ["BLPOP", *signals, self._wait_seconds(timeout)]
            if len(signals) == 1 and queues[0] not in self._next_due:
                self._send_wait_and_fetch(connection, wait, queues[0])
                return
            command = wait
            self._pending = ("wait", signals, 0)
        self._in_poll = connection
        self._brpop_sent_at = monotonic()
        connection.send_command(*command)

    def _send_wait_and_fetch(self, connection: Any, wait: list[Any], queue: str) -> None:
        """Wait on one queue with the fetch queued behind the wait on the same connection:
        Redis runs the fetch as soon as the wait returns, so a message published to an idle
        consumer is leased in the wait's round trip. (Not while a delayed message of the queue
        is due within the wait: the fetch's clock is the moment it was sent.)"""
        # acknowledgements never wait behind a blocking call: they go their own way this turn
        fetch, count = self._fetch_command(queue, with_acks=False)
        self._pending = ("wait_fetch", queue, count)
        self._in_poll = connection
        self._brpop_sent_at = monotonic()
        connection.send_packed_command(connection.pack_commands([wait, fetch]))

    def _brpop_read(self, **options: Any) -> bool:
        pending, self._pending = self._pending, None
        try:
            if pending is None:
                raise Empty()
            kind, target, count = pending
            command = "EVALSHA" if kind == "fetch" else "BLPOP"
            try:
                reply = self.client.parse_response(self.client.connection, command, **options)
                if kind == "wait_fetch":
                    if reply:
                        self._queue_cycle.rotate(target)
                    reply = self.client.parse_response(self.client.connection, "EVALSHA")
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except NoScriptError:
                self.scripts.load_all()
                if kind == "wait_fetch":
                    self._fetch_queue.append(target)  # its wake-up token was taken
                raise Empty() from None
            if kind == "wait_fetch":
                return self._deliver_fetched(target, reply, count)
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
            return self._deliver_fetched(target, reply, count)
        finally:
            self._in_poll = None
            flush_reauth = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.7
            if flush_reauth is not None:
                flush_reauth()

    def _deliver_fetched(self, target: str, reply: list[Any], count: int) -> bool:
        """Deliver what a fetch of ``count`` from ``target`` leased; Empty if nothing."""
        payloads = self._unpack(target, reply, target in self._no_ack_queues)
        if len(reply[1]) // FETCH_STRIDE >= count and self._refetch_after_full():
            self._fetch_queue.appendleft(target)  # likely more ready: skip the wait
        if not payloads:
            raise Empty()
        if not getattr(self.connection, "in_event_loop", False):
            # drain_events(): one message per call, the rest on the next calls
            self._buffered.extend((p, target) for p in payloads[1:])
            payloads = payloads[:1]
        for payload in payloads:
            self.connection._deliver(payload, target)
        return True

    def _refetch_after_full(self) -> bool:
        """Whether a fetch that got all it asked for is followed by another before a wait
        (with several queues the wait's ``BLPOP`` on all of them decides which is next)."""
        return len(self.active_queues) == 1

    def _fetch_deferred(self, queue: str) -> bool:
        """Whether a fetch from ``queue`` waits until half the prefetch slots are free.

        In a worker's event loop a fetch follows a fetch that filled every free slot or a
        wake-up, and each acknowledgement frees one slot: fetching at once would lease one
        message per call. While more than half the prefetch is held, the held messages keep
        the pool busy, so the fetch waits for half the slots and leases them in one call.
        """
        if queue in self._no_ack_queues or not getattr(self.connection, "in_event_loop", False):
            return False
        prefetch = self.qos.prefetch_count
        if not prefetch:
            return False
        free = self.qos.can_consume_max_estimate() - len(self._buffered)
        return bool(free < max(1, prefetch // 2))

    def _fetch_count(self, queue: str) -> int:
        """How many to lease from ``queue`` in one fetch."""
        no_ack = queue in self._no_ack_queues
        # kombu's reply collection counts one message per drain_events() call
        count = 1 if no_ack else self._free_slots()
        active = len(self.active_queues)
        if active > 1 and self.queue_order_strategy == "round_robin":
            count = max(1, count // active)  # share the slots between the queues
        return count

    def deliver_buffered(self) -> bool:
        """Hand over the next buffered message (``drain_events``); False if none."""
        active = set(self.active_queues)
        while self._buffered:
            payload, queue = self._buffered.popleft()
            if queue in active:
                self.connection._deliver(payload, queue)
                return True
            self.requeue_lease(payload["properties"]["delivery_tag"])  # no longer consumed
        return False

    def _return_buffered(self, queue: str | None = None) -> None:
        """Give buffered messages (of ``queue``, or all) back to their queue."""
        kept: deque[tuple[dict[str, Any], str]] = deque()
        while self._buffered:
            payload, of = self._buffered.popleft()
            if queue is None or of == queue:
                self.requeue_lease(payload["properties"]["delivery_tag"])
            else:
                kept.append((payload, of))
        self._buffered = kept

    # -- settling leases -------------------------------------------------------------------

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
        # in the loop's thread, while the channel is open and not handing back, the loop's
        # next turn settles it; a late ack after close goes at once through the last pool
        loop_thread = getattr(self.connection, "loop_thread", None)
        if loop_thread == threading.get_ident() and not self._closing:
            self._acks.setdefault(keys.queue, []).append(message_id)
            return
        self._warn_lost(keys.queue, self._ack_call(keys, [message_id]))
        self._maybe_retire()

    def _ack_call(self, keys: QueueKeys, message_ids: list[str]) -> list[Any]:
        lost: list[Any] = []
        for i in range(0, len(message_ids), ACK_BATCH):
            lost += self.scripts["ack"](
                keys=[keys.inflight, keys.ids],
                args=[keys.base, self.consumer_id, *message_ids[i : i + ACK_BATCH]],
                client=self.redis,
            )
        return lost

    def _fetch_awaited(self) -> str | None:
        """The queue whose fetch reply is awaited, if any."""
        return self._pending[1] if self._pending and self._pending[0] == "fetch" else None

    def flush_acks(self, closing: bool = False) -> None:
        """Settle the collected acknowledgements; those of a queue whose fetch is in flight
        wait for the next fetch (a moment), unless ``closing``. When closing, those that rode
        on a fetch whose reply was never read are sent again (settling twice is harmless)."""
        if closing:
            for queue, ids in self._riding.items():
                self._acks.setdefault(queue, [])[:0] = ids
            self._riding = {}
        fetching = None if closing else self._fetch_awaited()
        for queue in [q for q in self._acks if q != fetching]:
            ids = self._acks.pop(queue)
            try:
                lost = self._ack_call(self.queue_keys(queue), ids)
            except Exception:
                self._acks.setdefault(queue, [])[:0] = ids  # kept for the next turn
                raise
            if not closing:
                self._warn_lost(queue, lost)
        self._maybe_retire()

    def _warn_lost(self, queue: str, lost: list[Any]) -> None:
        for message_id in lost:
            logger.warning(
                "ack of message %s on %r ignored: this consumer no longer holds it "
                "(it was returned to the queue after a missed heartbeat)",
                bytes_to_str(message_id),
                queue,
            )

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
        if moved:
            if self._closing:
                self._handed_back += 1
            if rejected:
                self._emit(lifecycle.REJECTED, delivery_tag, keys.queue, {"requeue": True})
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

    def _basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super()._basic_cancel(consumer_tag)  # type: ignore[misc]
        if queue is not None and queue not in self.active_queues:
            self._return_buffered(queue)
        self._maybe_retire()
        return result
