"""The embedded redis-server used when no Redis is configured: start, crash, restart."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import redis

from taskqueue_backend.embedded import EmbeddedRedis
from taskqueue_backend.embedded_cluster import RedisClusterSet


def test_append_only_server_keeps_its_data_across_a_crash() -> None:
    with EmbeddedRedis(appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        try:
            client.set("survivor", "still here")
            server.kill()
            assert not server.running

            server.restart()

            assert client.get("survivor") == b"still here"
        finally:
            client.close()


def test_stop_removes_the_temporary_directory() -> None:
    server = EmbeddedRedis().start()
    directory = server.dir
    assert directory is not None

    server.stop()

    assert not server.running
    assert server.dir is None
    assert not os.path.exists(directory)


def test_a_picked_port_taken_before_the_start_is_picked_again() -> None:
    """Another process may take a free port between the pick and the start (the cluster's
    nodes pick theirs, and their bus ports, before any of them starts)."""
    server = EmbeddedRedis(extra_args=["--cluster-port", "0"])
    taken = socket.create_server(("127.0.0.1", server.port))
    try:
        server.start()
        assert server.port != taken.getsockname()[1]
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.stop()
        taken.close()


def test_a_port_the_caller_chose_is_never_changed() -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    server = EmbeddedRedis(port=port)
    try:
        with pytest.raises(RuntimeError, match="Address already in use"):
            server.start()
        assert server.port == port
    finally:
        server.stop()
        taken.close()


def test_a_cluster_that_cannot_start_leaves_no_node_running(tmp_path: Path) -> None:
    cluster = RedisClusterSet(tmp_path)
    cluster.nodes[3] = EmbeddedRedis(dir=str(tmp_path / "bad"), extra_args=["--no-such-option"])
    with pytest.raises(RuntimeError, match="exited"):
        cluster.start()
    assert not any(node.running for node in cluster.nodes)
