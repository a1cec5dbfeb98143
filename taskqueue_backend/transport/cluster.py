"""Redis Cluster: telling a cluster node from a lone server, and the clients that reach one.

An app points the broker at a cluster with ordinary ``redis://`` (or ``rediss://``) URLs of
one or more of its nodes, ``;``-separated; the transport asks the first node it reaches
(``INFO cluster``) whether it is part of a cluster, once per process and node, and then talks
to the cluster through redis-py's ``RedisCluster`` with every URL as a startup node. The
transport option ``cluster`` (True/False) says so instead of asking.

Everything the broker keeps stays within one hash slot per atomic step: each queue's keys
share the tag ``{<queue>}``, the registry, audit stream, known queues and kombu's binding
tables share ``{tq}`` (see ``keys.py`` and ``ClusterChannel``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlparse

import redis
from kombu.transport.redis import GlobalKeyPrefixMixin
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster

from ..flags import parse_flag

#: what the probe found, per (host, port): True for a cluster node
_probed: dict[tuple[str, int], bool] = {}
_probe_lock = threading.Lock()

#: connection settings kombu gives a pool that RedisCluster takes as they are
_PASSED = ("username", "password", "socket_timeout", "socket_connect_timeout",
           "socket_keepalive", "socket_keepalive_options", "health_check_interval",
           "retry_on_timeout", "client_name", "credential_provider")  # fmt: skip
_SSL = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname",
        "ssl_ca_path", "ssl_ca_data", "ssl_password")  # fmt: skip


def wanted(transport_options: Mapping[str, Any]) -> bool | None:
    """The ``cluster`` transport option: True, False, or None (ask the server)."""
    flag = transport_options.get("cluster")
    if flag is None or flag == "":
        return None
    if isinstance(flag, str):
        return parse_flag(flag, "transport option cluster")
    return bool(flag)


def startup_nodes(client: Any) -> list[tuple[str, int]]:
    """(host, port) of every URL of a kombu connection: the first one and its alternates."""
    found = [(str(client.hostname or "127.0.0.1"), int(client.port or 6379))]
    for url in client.alt or ():
        parsed = urlparse(str(url))
        if parsed.hostname:
            found.append((parsed.hostname, parsed.port or 6379))
    return list(dict.fromkeys(found))


def is_cluster_node(client: Any) -> bool:
    """Whether the first reachable node of a kombu connection runs in cluster mode.

    Asked once per process and node; a node that cannot be reached is not remembered (the
    transport asks again when Celery reconnects) and counts as a lone server, whose own
    connection error then says what is wrong.
    """
    for host, port in startup_nodes(client):
        with _probe_lock:
            known = _probed.get((host, port))
        if known is not None:
            return known
        try:
            probe = redis.Redis(host=host, port=port, **_probe_settings(client))
            try:
                enabled = str(probe.info("cluster").get("cluster_enabled", 0)) == "1"
            finally:
                probe.close()
        except redis.RedisError:
            continue
        with _probe_lock:
            _probed[(host, port)] = enabled
        return enabled
    return False


def _probe_settings(client: Any) -> dict[str, Any]:
    password = client.password() if callable(client.password) else client.password
    settings: dict[str, Any] = {"username": client.userid or None, "password": password,
                                "socket_connect_timeout": 2, "socket_timeout": 2}  # fmt: skip
    if client.ssl:
        settings["ssl"] = True
        if isinstance(client.ssl, Mapping):
            settings.update({k: v for k, v in client.ssl.items() if k in _SSL})
    return settings


def cluster_settings(connparams: Mapping[str, Any]) -> dict[str, Any]:
    """RedisCluster keyword arguments from the connection parameters kombu computed."""
    if int(connparams.get("db") or 0) != 0:
        raise ValueError(
            f"Redis Cluster has only database 0; the broker URL names database "
            f"{connparams['db']}: drop it from the URL (use global_keyprefix to share a cluster)"
        )
    settings = {k: connparams[k] for k in _PASSED if connparams.get(k) is not None}
    connection_class = connparams.get("connection_class")
    if connection_class is not None and issubclass(connection_class, redis.SSLConnection):
        settings["ssl"] = True
    settings.update({k: connparams[k] for k in _SSL if k in connparams})
    return settings


def make_client(
    nodes: Iterable[tuple[str, int]], settings: Mapping[str, Any], keyprefix: str = ""
) -> RedisCluster:
    """A cluster client over every startup node; with ``keyprefix``, one that prefixes the
    keys of kombu's own commands as kombu's ``PrefixedStrictRedis`` does."""
    startup = [ClusterNode(host, port) for host, port in nodes]
    if keyprefix:
        return PrefixedRedisCluster(startup_nodes=startup, global_keyprefix=keyprefix,
                                    **settings)  # fmt: skip
    return RedisCluster(startup_nodes=startup, **settings)


class PrefixedRedisCluster(GlobalKeyPrefixMixin, RedisCluster):  # type: ignore[misc]
    """kombu's key prefixing (binding tables, fanout PUBLISH) on a cluster client."""

    def __init__(self, *args: Any, global_keyprefix: str = "", **kwargs: Any) -> None:
        self.global_keyprefix = global_keyprefix
        RedisCluster.__init__(self, *args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = RedisCluster.pipeline(self, transaction, shard_hint)
        pipe.__class__ = PrefixedClusterPipeline
        pipe.global_keyprefix = self.global_keyprefix
        return pipe


class PrefixedClusterPipeline(GlobalKeyPrefixMixin, ClusterPipeline):  # type: ignore[misc]
    """The pipeline of ``PrefixedRedisCluster``."""

    global_keyprefix = ""


def is_redirect(exc: BaseException) -> bool:
    """A reply saying the slot is served elsewhere now, or the cluster is reconfiguring."""
    text = str(exc)
    return isinstance(exc, redis.exceptions.ResponseError | redis.exceptions.ClusterError) and (
        text.startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"))
        or isinstance(exc, redis.exceptions.ClusterDownError | redis.exceptions.MovedError
                      | redis.exceptions.AskError | redis.exceptions.TryAgainError)
    )  # fmt: skip


def node_client(client: Any, key: str) -> redis.Redis:
    """The plain client of the node serving ``key``'s slot (commands that must share one
    connection, as a write and the ``WAIT`` after it)."""
    node = client.get_node_from_key(key)
    return client.get_redis_connection(node)


def refresh(client: Any) -> None:
    """Ask the cluster for its slots again (after a MOVED or a failover)."""
    try:
        client.nodes_manager.initialize()
    except redis.RedisError:
        pass
