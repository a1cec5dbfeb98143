"""Flower with this broker: its broker page and ``/api/queues/length`` show true counts.

Flower picks a broker client by the scheme of ``Connection.as_uri()`` and, for Redis, counts
the lists kombu's own transport would keep — lists this broker does not have. When Flower is
loaded in a process where this transport renders a URL (Flower renders the app's broker URL
before it asks for queue lengths), the transport registers a broker client with Flower's
``Broker`` factory for exactly the URLs it rendered itself; every other URL still gets
Flower's own client. No Flower configuration is needed; ``install()`` can also be called from
a ``flowerconfig.py``.

Each queue reports ``messages`` (ready + delayed + in flight: everything that will still
run), ``messages_ready``, ``messages_unacknowledged`` (in flight), ``messages_delayed``,
``dead_letters``, ``consumers`` (live consumers of the queue) and ``paused`` (no consumer
leases from the queue until it is resumed).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

from . import stats

_rendered: dict[str, Any] = {}  # URL as rendered (with password) -> its kombu Connection
_lock = threading.Lock()


def remember(uri: str, client: Any) -> None:
    """A URL this transport rendered; Flower may ask for it."""
    with _lock:
        _rendered.setdefault(uri, client)
    install()


def install() -> None:
    """Register the broker client with Flower's ``Broker`` factory, if Flower is loaded."""
    module = sys.modules.get("flower.utils.broker")
    factory = getattr(module, "Broker", None)
    if factory is None or getattr(factory, "_taskqueue", False):
        return
    original = factory.__new__

    def new(cls: Any, broker_url: str, *args: Any, **kwargs: Any) -> Any:
        with _lock:
            client = _rendered.get(broker_url)
        if client is not None:
            return FlowerBroker(client)
        return original(cls, broker_url, *args, **kwargs)

    factory.__new__ = staticmethod(new)
    factory._taskqueue = True


class FlowerBroker:
    """Flower's broker client interface (``async queues(names)``) over this broker."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def queues(self, names: Any) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, queue_rows, self.client, list(names))


def queue_rows(client: Any, names: list[str]) -> list[dict[str, Any]]:
    with client.clone() as connection:
        channel = connection.default_channel
        redis, prefix, options = channel.redis, channel.global_keyprefix, channel.options
        consumers = stats.consumers_per_queue(redis, prefix, options, names)
        return [
            stats.flower_row(
                stats.read_counts(redis, channel.scripts, prefix, options, name),
                consumers.get(name, 0),
            )
            for name in names
        ]
