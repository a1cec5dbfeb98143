"""A consuming channel's place in the worker registry: registering, heartbeating, leaving.

A channel registers its consumer id when it starts consuming (an idle worker is listed too),
and a heartbeat thread keeps it current: the queues it consumes now, the queues it may hold
leases in, its node name, pid and counts. When it stops — closing, or having cancelled every
queue and settled every lease — it hands back what it still holds (counted as returned) and
moves offline with reason ``stopped``.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from redis import Redis

from .. import worker_info
from ..clock import now_ms
from . import recovery
from .heartbeat import Heartbeat
from .keys import QueueKeys
from .options import BrokerOptions

logger = logging.getLogger(__name__)

#: (prefix, node name, pid) of the worker processes whose failure count started here
_counting_failures: set[tuple[str, str, int]] = set()


class MembershipMixin:
    """The channel's registry side (mixed into ``channel.TaskQueueChannel``)."""

    options: BrokerOptions
    consumer_id: str
    global_keyprefix: str
    _owner_pid: int

    if TYPE_CHECKING:  # provided by the channel, the consuming mixin and kombu's channel
        pool: Any
        _qos: Any
        _in_poll: Any
        _leases: dict[str, str]
        _acks: dict[str, list[str]]
        _riding: dict[str, list[str]]
        _no_ack_queues: set[str]
        _pending: tuple[str, Any, int] | None
        active_queues: list[str]
        connection_errors: tuple[type[BaseException], ...]

        @property
        def redis(self) -> Redis: ...

        @property
        def scripts(self) -> Any: ...

        def queue_keys(self, queue: str) -> QueueKeys: ...

        def _return_buffered(self, queue: str | None = None) -> None: ...

        def flush_acks(self, closing: bool = False) -> None: ...

    def _init_membership(self) -> None:
        self._held_queues: set[str] = set()
        self._heartbeat: Heartbeat | None = None
        self._handed_back = 0  # messages returned while closing (counted as "returned")
        self._closing = False
        self._started_at = str(now_ms())

    def _consuming(self) -> list[str]:
        """The queues this consumer takes messages from now (what the registry shows)."""
        return [q for q in self.active_queues if q not in self._no_ack_queues]

    def _prepare_consumer(self, queue: str) -> None:
        """Register this consumer (and the queue it leases from) before the first lease."""
        if queue in self._held_queues and self._heartbeat is not None:
            return
        self._held_queues.add(queue)
        info = self._consumer_info()
        counter = (self.global_keyprefix, info["hostname"], os.getpid())
        if counter not in _counting_failures:
            _counting_failures.add(counter)
            recovery.reset_failures(self.redis, *counter)
        recovery.register(self.redis, self.global_keyprefix, self.consumer_id, info,
                          self._consuming(), self._held_queues)  # fmt: skip
        if self._heartbeat is None:
            self._heartbeat = Heartbeat(
                self._heartbeat_client(),
                self.scripts,
                self.global_keyprefix,
                self.consumer_id,
                self.options,
                self._consumer_info,
                self._consuming,
                lambda: set(self._held_queues),
            )
            self._heartbeat.start()

    def _heartbeat_client(self) -> Any:
        """The heartbeat thread's own client (the pool is shared and thread-safe)."""
        return Redis(connection_pool=self.pool)

    def _fetch_in_flight(self) -> bool:
        return self._pending is not None and self._pending[0] in ("fetch", "wait_fetch")

    def _consumer_info(self) -> dict[str, str]:
        return {
            "hostname": worker_info.WORKER_NODENAME or socket.gethostname(),
            "pid": str(os.getpid()),
            "started_at": self._started_at,
            **worker_info.worker_stats(),
        }

    def _hand_back(self) -> None:
        """Return every message this consumer still holds, then leave the registry.

        A fetch reply still in flight is not read (its messages would reach Celery while
        it shuts down); the script already ran, so those messages are held and go back
        with the rest.
        """
        self._in_poll = None
        if self._heartbeat is None:
            return
        self._closing, self._handed_back = True, 0
        try:
            self.flush_acks(closing=True)
        except self.connection_errors as exc:
            logger.warning("could not acknowledge finished messages at shutdown: %s", exc)
        try:
            self._return_buffered()
            if self._qos is not None:
                self._qos.restore_unacked_once()
        except self.connection_errors as exc:
            logger.warning("could not restore unacked messages at shutdown: %s", exc)
        self._retire()

    def _maybe_retire(self) -> None:
        """A channel that stopped consuming and settled every lease stops heartbeating.

        (A client that once read an ``inspect`` reply is not a worker to watch.)
        """
        pending_fetch = self._fetch_in_flight()
        if (
            self._heartbeat is not None
            and not self._leases
            and not self._acks
            and not self._riding
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
            returned = self._handed_back
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
            self._handed_back, self._closing = 0, False
        except self.connection_errors as exc:
            logger.warning(
                "could not hand back this consumer's messages (%s); they return "
                "to their queues after heartbeat_timeout=%ss",
                exc,
                self.options.heartbeat_timeout,
            )
