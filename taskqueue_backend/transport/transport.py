"""The kombu transport class selected by ``broker_transport``."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote

from kombu.transport import redis as kombu_redis
from kombu.utils.url import as_url

from ..selection import TRANSPORT_ALIAS
from .channel import Channel, SentinelChannel
from .poller import LeasePoller


def _uses_sentinel(client: Any) -> bool:
    urls = [client.hostname or "", *[str(u) for u in (client.alt or [])]]
    return "master_name" in client.transport_options or any(
        u.startswith("sentinel://") for u in urls
    )


def _uses_cluster(client: Any) -> bool:
    """The ``cluster`` transport option, or else what the first reachable node says."""
    from . import cluster

    flag = cluster.wanted(client.transport_options)
    return cluster.is_cluster_node(client) if flag is None else flag


#: URL schemes kombu would map to its own Redis transport when it switches to an alternate
_STOCK_SCHEMES = ("redis://", "rediss://", "sentinel://")


def keep_this_transport_on_failover(client: Any) -> None:
    """Make the connection's failover cycle switch to alternates by this transport's scheme.

    After a connection error kombu switches to the next alternate URL of a ``;``-separated
    list and takes the transport from that URL's scheme: with ``sentinel://a;sentinel://b``
    (how Sentinel is configured) or ``redis://a;redis://b`` the worker would go on, after the
    first failover, on kombu's own Redis transport — reading lists this broker never writes,
    while its queues wait. The cycle is rebuilt over the same URLs with the ``tq`` scheme
    (registered by the hooks); ``client.alt`` keeps the original URLs, where kombu's Sentinel
    channel finds its sentinels.
    """
    alternates = [str(u) for u in (client.alt or [])]
    if getattr(client, "_tq_cycle", False) or not any(
        u.startswith(_STOCK_SCHEMES) for u in alternates
    ):
        return
    ours = [_with_our_scheme(u, bool(client.ssl)) if u.startswith(_STOCK_SCHEMES) else u
            for u in alternates]  # fmt: skip
    client.cycle = client.failover_strategy(ours)
    next(client.cycle)  # as kombu's: the connection is on the first one now
    client._tq_cycle = True


def _with_our_scheme(url: str, ssl_given: bool) -> str:
    """``url`` by the ``tq`` scheme. A ``rediss://`` URL keeps TLS: its ``ssl_*`` query
    parameters say how; without them and without ``broker_use_ssl``, kombu's own default for
    ``rediss://`` (TLS without certificate checks, which kombu warns about) is spelled out."""
    scheme, rest = url.split("://", 1)
    if scheme == "rediss" and not ssl_given and "ssl_" not in rest:
        rest += ("&" if "?" in rest else "?") + "ssl_cert_reqs=none"
    return f"{TRANSPORT_ALIAS}://{rest}"


class Transport(kombu_redis.Transport):
    """Redis sorted-set broker: strict priorities, atomic leases, delayed delivery.

    Redis Sentinel is used when the URL is ``sentinel://`` or ``master_name`` is given in
    ``broker_transport_options``, as with kombu's own Redis transport.

    ``Connection.as_uri()`` names the Redis server with its own scheme (``redis://``,
    ``rediss://`` or ``sentinel://``) rather than this class's import path, so tools that
    pick a broker client by scheme (Flower) recognise it; ``broker_transport`` still selects
    this transport.
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
        from . import hooks

        hooks.install()  # the transport is selected: its Celery hooks apply to this process
        keep_this_transport_on_failover(client)
        self.sentinel = _uses_sentinel(client)
        self.cluster = not self.sentinel and _uses_cluster(client)
        if self.sentinel:
            self.Channel = SentinelChannel
            self.default_port = kombu_redis.SentinelTransport.default_port
        elif self.cluster:
            from .cluster_channel import ClusterChannel

            self.Channel = ClusterChannel
        super().__init__(client, **kwargs)
        if self.cluster:
            from .cluster_waits import ClusterPoller

            self.cycle = ClusterPoller()  # type: ignore[assignment]
        else:
            self.cycle = LeasePoller()  # type: ignore[assignment]
        # kombu parses the URL itself (class attribute False) and then asks the instance
        # whether it renders its own: it does (see as_uri)
        self.can_parse_url = True
        #: the thread of the Celery worker's event loop driving the connection, once one does
        #: (its acknowledgements are settled once per turn)
        self.loop_thread: int | None = None

    def as_uri(self, uri: str, include_password: bool = False, mask: str = "**") -> str:
        client: Any = self.client
        if self.sentinel:
            scheme = "sentinel"
        elif client.ssl or str(client.hostname or "").startswith("rediss"):
            scheme = "rediss"
        else:
            scheme = "redis"
        password = client.password
        if callable(password):
            password = password()
        rendered = as_url(
            scheme,
            client.hostname or "localhost",
            client.port or self.default_port,
            client.userid,
            password if include_password else mask,
            quote(str(client.virtual_host or "")),
            sanitize=not include_password,
            mask=mask,
        )
        from . import flower

        flower.remember(rendered, client)
        return rendered

    @property
    def in_event_loop(self) -> bool:
        """Whether an event loop drives the connection: then a fetch is delivered whole,
        while drain_events() hands over one message per call."""
        return self.loop_thread is not None

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        self.loop_thread = threading.get_ident()
        super().register_with_event_loop(connection, loop)

    def drain_events(self, connection: Any, timeout: Any = None, **kwargs: Any) -> Any:
        channels: list[Any] = list(self.channels or ())
        for channel in channels:
            deliver = getattr(channel, "deliver_buffered", None)
            if deliver is not None and deliver():
                return None
        return super().drain_events(connection, timeout=timeout)

    @property
    def supports_batch_publish(self) -> bool:
        return True


class SentinelTransport(Transport):
    """Explicit Sentinel variant (``broker_transport = "...transport:SentinelTransport"``)."""

    Channel: Any = SentinelChannel
    default_port: Any = kombu_redis.SentinelTransport.default_port
