"""The channel for Redis Cluster: the broker's keys through ``RedisCluster``, waits per queue.

What differs from the channel on one server (``channel.py``):

- the broker's own calls go through a ``RedisCluster`` client (every URL of the connection a
  startup node), which follows MOVED/ASK and finds a promoted replica by itself;
- kombu's binding tables carry the ``{tq}`` hash tag (``{tq}:_kombu.binding.<exchange>``), so
  kombu's binding scripts stay within one slot;
- consuming waits on one connection per queue (``cluster_waits.py``);
- a publish that waits for replicas (``wait_for_replicas``) sends its ``WAIT`` on the
  connection of the node that took the write, and a ``producer.batch()`` burst is one
  pipeline per node;
- fanout (PUB/SUB) stays kombu's: a cluster forwards ``PUBLISH`` to every node, so the
  subscriber's connection to any one node (the URL's, or the next alternate's after a
  failure) hears it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from . import cluster
from .batch import BatchPublishError, ScriptBatch, ask_replicas, check_replicas
from .channel import TaskQueueChannel
from .cluster_waits import ClusterWaitsMixin


class ClusterChannel(ClusterWaitsMixin, TaskQueueChannel, kombu_redis.Channel):
    """Channel for a Redis Cluster (found by ``cluster.is_cluster_node`` or the ``cluster``
    transport option)."""

    keyprefix_queue = "{tq}:_kombu.binding.%s"
    keyprefix_binding_deadlines = "{tq}:_kombu.binding_deadlines"
    keyprefix_binding_permanent = "{tq}:_kombu.binding_permanent.%s"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._cluster: RedisCluster | None = None
        self._kombu_cluster: RedisCluster | None = None
        self._init_cluster_waits()
        super().__init__(*args, **kwargs)

    # -- clients -------------------------------------------------------------------------

    def _cluster_settings(self) -> dict[str, Any]:
        return cluster.cluster_settings(self._connparams())

    @property
    def redis(self) -> Any:
        """The cluster client for the broker's keys (named with their prefix already)."""
        if self._cluster is None:
            from .scripts import Scripts

            nodes = cluster.startup_nodes(self.connection.client)
            self._cluster = cluster.make_client(nodes, self._cluster_settings())
            self._scripts = Scripts(self._cluster)  # type: ignore[arg-type]
        return self._cluster

    @property
    def kombu_client(self) -> Any:
        """The cluster client for kombu's own keys, prefixed with ``global_keyprefix`` as
        kombu's client prefixes them."""
        if not self.global_keyprefix:
            return self.redis
        if self._kombu_cluster is None:
            nodes = cluster.startup_nodes(self.connection.client)
            self._kombu_cluster = cluster.make_client(
                nodes, self._cluster_settings(), self.global_keyprefix
            )
        return self._kombu_cluster

    def _heartbeat_client(self) -> Any:
        return self.redis  # thread-safe: a connection pool per node

    def _fetch_in_flight(self) -> bool:
        return self._fetching is not None

    def _fetch_awaited(self) -> str | None:
        return self._fetching

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # kombu's PING and PUB/SUB: one node is enough
            return super()._create_client(asynchronous=True)
        return self.kombu_client

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client if isinstance(client, RedisCluster) else self.kombu_client

    def _refresh_bindings(self, queues: Any) -> None:
        """kombu's refresh, one script call each (a cluster pipeline does not load scripts)."""
        for queue in queues:
            for exchange, routing_key, args in self.state.queue_bindings(queue):
                _, pattern, _ = self.typeof(exchange).prepare_bind(
                    queue, exchange, routing_key, args
                )
                self._refresh_binding(
                    keys=[self.keyprefix_queue % (exchange,), self._script_binding_deadlines],
                    args=[self.sep.join([routing_key or "", pattern or "", queue]), exchange,
                          self._binding_ttl(queue)],
                    client=self.kombu_client,
                )  # fmt: skip

    # -- publishing ----------------------------------------------------------------------

    def _publish_replicated(self, call_keys: list[str], call_args: list[Any]) -> None:
        """Publish and ``WAIT`` on the same connection: the one of the key's node."""
        for attempt in (1, 2):
            node = cluster.node_client(self.redis, call_keys[0])
            pipe = node.pipeline(transaction=False)
            self.scripts["publish"](keys=call_keys, args=call_args, client=pipe)
            ask_replicas(self, pipe)
            try:
                replies = pipe.execute()
            except Exception as exc:
                if attempt == 2 or not cluster.is_redirect(exc):
                    raise
                cluster.refresh(self.redis)  # a redirect: nothing ran, ask again
                continue
            check_replicas(self, replies[-1])
            return

    def create_publish_batch(self, max_size: int) -> ScriptBatch:
        return ClusterScriptBatch(self, max_size)

    # -- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        self.close_waits()
        super().close()
        for client in (self._kombu_cluster, self._cluster):
            if client is not None:
                client.close()


class ClusterScriptBatch(ScriptBatch):
    """A ``producer.batch()`` burst as one pipeline per node (each with its own ``WAIT``)."""

    def __init__(self, channel: ClusterChannel, max_size: int) -> None:
        super().__init__(channel, max_size)
        self._calls: list[tuple[str, str, list[str], list[Any]]] = []

    def add_script(self, name: str, keys: list[str], args: list[Any]) -> None:
        self._calls.append(("script", name, keys, args))
        self._count()

    def add(self, name: str, *args: Any) -> None:
        if name == "publish":
            args = (self.channel.global_keyprefix + str(args[0]), *args[1:])
        self._calls.append(("command", name, list(args), []))
        self._count()

    def _full(self) -> None:
        self.flush()

    def flush(self) -> None:
        calls, self._calls = self._calls, []
        self._buffered = 0
        if not calls:
            return
        try:
            for _attempt in (1, 2):
                calls = self._send(calls)
                if not calls:
                    return
                cluster.refresh(self.channel.redis)
        except BatchPublishError:
            raise
        except Exception as exc:
            raise BatchPublishError("publish batch failed; delivery is uncertain") from exc
        raise BatchPublishError("publish batch failed: the cluster kept redirecting it")

    def _send(self, calls: list[tuple[str, str, list[str], list[Any]]]) -> list[Any]:
        """Send each node its calls; those redirected (not run) are returned."""
        client: Any = self.channel.redis
        by_node: dict[str, tuple[Any, list[Any]]] = {}
        for call in calls:
            kind, name, keys, _args = call
            key = keys[0] if kind == "script" else None
            node = client.get_node_from_key(key) if key else client.get_random_node()
            if node.name not in by_node:
                pipe = client.get_redis_connection(node).pipeline(transaction=False)
                by_node[node.name] = (pipe, [])
            pipe, sent = by_node[node.name]
            if kind == "script":
                self.channel.scripts[name](keys=keys, args=call[3], client=pipe)
            else:
                getattr(pipe, name)(*keys)
            sent.append(call)
        redirected: list[Any] = []
        for pipe, sent in by_node.values():
            waits = ask_replicas(self.channel, pipe)
            replies = pipe.execute(raise_on_error=False)
            for call, reply in zip(sent, replies, strict=False):
                if isinstance(reply, Exception):
                    if cluster.is_redirect(reply) or isinstance(reply, NoScriptError):
                        redirected.append(call)
                    else:
                        raise reply
            if waits and not isinstance(replies[-1], Exception):
                check_replicas(self.channel, replies[-1])
        return redirected

    def discard(self) -> None:
        self._buffered = 0
        self._calls = []

    def close(self) -> None:
        self._closed = True
        self._calls = []
