"""Consuming on Redis Cluster: one blocking connection per consumed queue, to the node that
serves the queue's slot.

A queue's wake-up token lives in the queue's own slot, so one ``BLPOP`` cannot wait on the
queues of a worker that live on different nodes (nor on two slots of one node). Each
consumed queue gets its own connection, which alternates — as the single connection does on
one server (``consuming.py``) — between ``BLPOP`` on the queue's token and the ``fetch.lua``
call that leases from it. The channel keeps at most one fetch in flight, so the leases never
exceed the free prefetch slots. ``ClusterPoller`` registers every such connection with the
event loop (or with ``drain_events``' poll); an idle worker costs one ``BLPOP`` per consumed
queue per ``brpop_timeout`` (1 s by default).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from functools import partial
from time import monotonic
from typing import TYPE_CHECKING, Any

from kombu.transport import virtual
from redis.exceptions import NoScriptError, ResponseError

from . import cluster
from .poller import LeasePoller

if TYPE_CHECKING:
    from .channel import TaskQueueChannel

    _WaitsBase = TaskQueueChannel
else:
    _WaitsBase = object

logger = logging.getLogger(__name__)

Empty = virtual.Empty

#: the poller's event type of a queue's connection is this followed by the queue's name
WAIT_TYPE = "QUEUE_WAIT "


@dataclass
class QueueWait:
    """One consumed queue's connection and the command it has in flight."""

    queue: str
    connection: Any
    pending: str | None = None  # "wait" (BLPOP) or "fetch" (fetch.lua)
    count: int = 0

    @property
    def socket(self) -> Any:
        return self.connection._sock

    def close(self) -> None:
        self.pending = None
        try:
            self.connection.disconnect()
        except Exception:  # noqa: BLE001 - closing what may be broken already
            pass


class ClusterWaitsMixin(_WaitsBase):
    """The cluster channel's consuming loop (mixed into ``ClusterChannel``)."""

    def _init_cluster_waits(self) -> None:
        self._waits: dict[str, QueueWait] = {}
        self._fetching: str | None = None

    def start_waits(self) -> list[QueueWait]:
        """Give each consumed queue's connection a command (a fetch where one is due, else a
        wait); every connection the poller must watch."""
        active = self.active_queues
        if not active:
            return list(self._waits.values())
        self._fetch_queue = deque(q for q in dict.fromkeys(self._fetch_queue) if q in active)
        for queue in active:
            if queue not in self._waits:
                self._waits[queue] = self._open_wait(queue)
                self._want_fetch(queue)  # look first: it may hold messages already
        if self._fetching is None and not self._buffered:
            # the queue order strategy picks among the queues with something to fetch
            for queue in self._queue_cycle.consume(len(active)):
                if queue in self._fetch_queue and self._waits[queue].pending is None:
                    if self._fetch_deferred(queue):
                        break  # the next turn of the loop asks again
                    self._queue_cycle.rotate(queue)
                    self._send_fetch(self._waits[queue])
                    break
        for queue in active:
            wait = self._waits[queue]
            if wait.pending is None and queue not in self._fetch_queue:
                self._send_wait(wait)
        return list(self._waits.values())

    def _refetch_after_full(self) -> bool:
        return True  # a full fetch likely left more: fetch again before waiting

    def _open_wait(self, queue: str) -> QueueWait:
        client = cluster.node_client(self.redis, self.queue_keys(queue).signal)
        pool = client.connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
        connection.connect()
        return QueueWait(queue, connection)

    def _send_wait(self, wait: QueueWait) -> None:
        signal = self.queue_keys(wait.queue).signal
        wait.connection.send_command("BLPOP", signal, self._wait_seconds(None, wait.queue))
        wait.pending = "wait"
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]

    def _send_fetch(self, wait: QueueWait) -> None:
        command, wait.count = self._fetch_command(wait.queue)
        wait.connection.send_command(*command)
        wait.pending = "fetch"
        self._fetching = wait.queue

    def read_wait(self, queue: str) -> bool:
        """Read the reply on ``queue``'s connection: deliver what a fetch leased, or note that
        the queue should be fetched from (a token, or the wait's timeout: a delayed message
        may be due). Raises Empty when nothing was delivered."""
        wait = self._waits.get(queue)
        if wait is None:
            raise Empty()
        kind, wait.pending = wait.pending, None
        if kind is None:  # readable with nothing asked: the server closed the connection
            self._drop_wait(queue)
            raise Empty()
        if kind == "fetch":
            self._fetching = None
        try:
            reply = wait.connection.read_response()
        except self.connection_errors:
            self._drop_wait(queue)
            raise
        except NoScriptError:
            self.scripts.load_all()  # a promoted replica, or a node restarted empty
            self._want_fetch(queue, first=True)
            raise Empty() from None
        except ResponseError as exc:
            if not cluster.is_redirect(exc):
                raise
            logger.info("queue %r: %s; asking the cluster for its slots again", queue, exc)
            cluster.refresh(self.redis)
            self._drop_wait(queue)
            self._want_fetch(queue, first=True)
            raise Empty() from None
        if kind == "wait":
            self._want_fetch(queue)
            raise Empty()
        if queue in self._fetch_queue:
            self._fetch_queue.remove(queue)
        if queue not in self.active_queues:
            self._unpack_and_return(queue, reply)
            raise Empty()
        return self._deliver_fetched(queue, reply, wait.count)

    def _unpack_and_return(self, queue: str, reply: list[Any]) -> None:
        """A fetch for a queue no longer consumed: hand its leases straight back."""
        for payload in self._unpack(queue, reply, queue in self._no_ack_queues):
            self.requeue_lease(payload["properties"]["delivery_tag"])

    def _want_fetch(self, queue: str, first: bool = False) -> None:
        if queue in self._fetch_queue:
            return
        if first:
            self._fetch_queue.appendleft(queue)
        else:
            self._fetch_queue.append(queue)

    def _drop_wait(self, queue: str) -> None:
        wait = self._waits.pop(queue, None)
        if wait is not None:
            if self._fetching == queue:
                self._fetching = None
            cycle = getattr(self.connection, "cycle", None)
            if isinstance(cycle, ClusterPoller):
                cycle.forget_wait(self, wait)
            wait.close()

    def close_waits(self) -> None:
        for queue in list(self._waits):
            self._drop_wait(queue)


class ClusterPoller(LeasePoller):
    """kombu's poller, also watching each cluster channel's per-queue connections."""

    def _register_BRPOP(self, channel: Any) -> None:  # noqa: N802 - kombu's name
        start = getattr(channel, "start_waits", None)
        if start is None:
            super()._register_BRPOP(channel)
            return
        for wait in start():
            sock = wait.socket
            ident = (channel, wait.queue, WAIT_TYPE)
            if sock is None or self._chan_to_sock.get(ident) is sock:
                continue
            kind = WAIT_TYPE + wait.queue
            channel.handlers[kind] = partial(channel.read_wait, wait.queue)
            self._fd_to_chan[sock.fileno()] = (channel, kind)
            self._chan_to_sock[ident] = sock
            self.poller.register(sock, self.eventflags)

    def forget_wait(self, channel: Any, wait: QueueWait) -> None:
        sock = self._chan_to_sock.pop((channel, wait.queue, WAIT_TYPE), None)
        if sock is None:
            return
        try:
            self._fd_to_chan.pop(sock.fileno(), None)
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass

    def on_readable(self, fileno: int) -> Any:
        found = self._fd_to_chan.get(fileno)
        if found is not None and found[1].startswith(WAIT_TYPE):
            channel, kind = found
            return channel.handlers[kind]()  # always read: a reply never waits for credit
        return super().on_readable(fileno)
