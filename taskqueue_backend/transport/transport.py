"""The kombu transport class selected by ``broker_transport``."""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

from .channel import Channel, SentinelChannel


def _uses_sentinel(client: Any) -> bool:
    urls = [client.hostname or "", *[str(u) for u in (client.alt or [])]]
    return "master_name" in client.transport_options or any(
        u.startswith("sentinel://") for u in urls
    )


class Transport(kombu_redis.Transport):
    """Redis sorted-set broker: strict priorities, atomic leases, delayed delivery.

    Redis Sentinel is used when the URL is ``sentinel://`` or ``master_name`` is given in
    ``broker_transport_options``, as with kombu's own Redis transport.
    """

    Channel: Any = Channel
    driver_type = "redis"
    driver_name = "redis"

    implements = kombu_redis.Transport.implements.extend(
        asynchronous=True,
        batch_publish=True,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
    )

    def __init__(self, client: Any, **kwargs: Any) -> None:
        if _uses_sentinel(client):
            self.Channel = SentinelChannel
            self.default_port = kombu_redis.SentinelTransport.default_port
        super().__init__(client, **kwargs)

    @property
    def supports_batch_publish(self) -> bool:
        return True


class SentinelTransport(Transport):
    """Explicit Sentinel variant (``broker_transport = "...transport:SentinelTransport"``)."""

    Channel: Any = SentinelChannel
    default_port: Any = kombu_redis.SentinelTransport.default_port
