"""A Redis Cluster on loopback for tests and benchmarks: three masters and three
replicas from the ``redis-server`` binary, joined with ``redis-cli --cluster create``."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import ClusterNode

from .embedded import EmbeddedRedis, find_redis_server, free_port


class RedisClusterSet:
    """Six nodes (3 masters + 1 replica each), ``cluster-node-timeout`` 1 s, no persistence."""

    def __init__(self, folder: Path, masters: int = 3, replicas: int = 1) -> None:
        self.folder = folder
        self.nodes: list[EmbeddedRedis] = []
        for i in range(masters * (1 + replicas)):
            node_dir = folder / f"node-{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(EmbeddedRedis(dir=str(node_dir), extra_args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "1000",
                "--cluster-port", str(free_port()),
                "--cluster-replica-validity-factor", "0",
            ]))  # fmt: skip
        self.replicas = replicas

    def start(self) -> RedisClusterSet:
        try:
            self._start()
        except BaseException:
            self.stop()  # never leave part of a cluster running
            raise
        return self

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every running node says ``cluster_state:ok`` and every slot has a master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._ok(n) for n in self.nodes if n.running) and self._replicas_synced():
                return
            time.sleep(0.05)
        raise AssertionError(f"the cluster in {self.folder} did not become healthy")

    def _ok(self, node: EmbeddedRedis) -> bool:
        try:
            return redis.Redis(port=node.port).cluster("info")["cluster_state"] == "ok"
        except (redis.RedisError, KeyError):
            return False

    def _replicas_synced(self) -> bool:
        for node in self.nodes:
            if not node.running:
                continue
            try:
                info = redis.Redis(port=node.port).info("replication")
            except redis.RedisError:
                return False
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    @property
    def url(self) -> str:
        """Every node, ``;``-separated: the startup nodes of a client."""
        return ";".join(f"redis://127.0.0.1:{n.port}/0" for n in self.nodes)

    @property
    def first_url(self) -> str:
        return self.nodes[0].url

    def client(self) -> redis.RedisCluster:
        """A cluster client, every running node a startup node."""
        nodes = [ClusterNode("127.0.0.1", n.port) for n in self.nodes if n.running]
        return redis.RedisCluster(startup_nodes=nodes)

    def master_of(self, key: str) -> EmbeddedRedis:
        """The node serving ``key``'s slot now."""
        node = self.client().get_node_from_key(key)
        return next(n for n in self.nodes if n.port == node.port)

    def replica_of(self, master: EmbeddedRedis) -> EmbeddedRedis:
        """The node replicating ``master`` now."""
        for node in self.nodes:
            if node.running and node is not master:
                info = redis.Redis(port=node.port).info("replication")
                if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                    return node
        raise AssertionError(f"no replica of 127.0.0.1:{master.port}")

    def kill(self, node: EmbeddedRedis) -> None:
        node.kill()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
