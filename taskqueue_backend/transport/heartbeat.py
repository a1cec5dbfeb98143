"""The heartbeat thread of a consuming channel.

It runs beside the event loop so that a long task (solo/threads pool) or a busy loop
cannot make a live worker look dead, and on each beat it also recovers consumers that
stopped beating, so a killed worker's messages return within ``heartbeat_timeout``, and
applies the dead-letter retention (when configured) to the queues it consumes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from redis import Redis
from redis.exceptions import RedisError

from .. import worker_info
from . import recovery, retention
from .options import BrokerOptions
from .scripts import Scripts

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Beats for one consumer id every ``heartbeat_interval`` seconds until stopped."""

    def __init__(
        self,
        client: Redis,
        scripts: Scripts,
        prefix: str,
        consumer_id: str,
        options: BrokerOptions,
        info: Callable[[], dict[str, str]],
        consuming: Callable[[], Iterable[str]],
        held: Callable[[], Iterable[str]],
    ) -> None:
        super().__init__(name=f"tq-heartbeat-{consumer_id}", daemon=True)
        self.client = client
        self.scripts = scripts
        self.prefix = prefix
        self.consumer_id = consumer_id
        self.options = options
        self.info = info
        self.consuming = consuming
        self.held = held
        self._stop_event = threading.Event()
        self._beaten = False

    def beat(self) -> None:
        info = self.info()
        consuming = list(self.consuming())
        known = recovery.register(
            self.client, self.prefix, self.consumer_id, info, consuming, self.held()
        )
        if self._beaten and not known:
            logger.warning(
                "consumer %s missed its heartbeat window and was declared dead; the messages "
                "it held were returned to their queues and its acknowledgements for them "
                "will be ignored",
                self.consumer_id,
            )
        self._beaten = True
        worker_info.heartbeat_succeeded(self.options.heartbeat_timeout)
        recovery.reap_stale(
            self.client, self.scripts, self.prefix, self.options, info.get("hostname")
        )
        for queue in consuming:
            retention.trim_queue(self.client, self.scripts, self.prefix, self.options, queue)

    def run(self) -> None:
        while True:
            try:
                self.beat()
            except RedisError as exc:
                logger.warning("broker heartbeat failed (will retry): %s", exc)
            except Exception:  # the thread must outlive any single failure
                logger.exception("broker heartbeat failed (will retry)")
            if self._stop_event.wait(self.options.heartbeat_interval):
                return

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
