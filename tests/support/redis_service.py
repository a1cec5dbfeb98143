"""Finding the Redis the tests run against, and removing only the keys a test created."""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster


def ping_error(url: str) -> str | None:
    """None when a Redis at ``url`` (the first of a ``;`` list) answers PING, else a one-line
    description of why not."""
    first = url.split(";")[0]
    client = redis.Redis.from_url(first, socket_connect_timeout=1.0, socket_timeout=2.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def is_cluster(url: str) -> bool:
    """Whether the first node of ``url`` runs in cluster mode."""
    first = redis.Redis.from_url(url.split(";")[0])
    try:
        return str(first.info("cluster").get("cluster_enabled", 0)) == "1"
    finally:
        first.close()


def skip_stock_on_cluster(url: str) -> None:
    """Side-by-side runs of stock kombu and Celery's Redis backend need one server: neither
    supports Redis Cluster."""
    import pytest

    if is_cluster(url):
        pytest.skip("stock kombu and Celery's Redis backend do not support Redis Cluster")


def client_for(url: str) -> Any:
    """A plain client on ``url``; a ``RedisCluster`` over every node of a ``;`` list when
    they form a cluster (as the transport decides)."""
    urls = url.split(";")
    if not is_cluster(url):
        return redis.Redis.from_url(urls[0])
    nodes = []
    for each in urls:
        kwargs = redis.connection.parse_url(each)
        nodes.append(ClusterNode(kwargs.get("host", "127.0.0.1"), int(kwargs.get("port", 6379))))
    return RedisCluster(startup_nodes=nodes)


def delete_keys_containing(client: Any, fragment: str) -> int:
    """UNLINK every key whose name contains ``fragment``; return how many were removed.

    Matching anywhere (not only at the start) also catches keys where the prefix sits inside a
    ``{hash tag}``. Callers pass a random per-test fragment, so nothing else can match.
    """
    if isinstance(client, RedisCluster):  # one key per call: keys live in many slots
        return sum(int(client.unlink(key)) for key in
                   list(client.scan_iter(match=f"*{fragment}*", count=500)))  # fmt: skip
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"*{fragment}*", count=500):
        batch.append(key)
        if len(batch) >= 500:
            removed += int(client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(client.unlink(*batch))
    return removed
