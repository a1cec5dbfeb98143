"""The embedded redis-server used when no Redis is configured: start, crash, restart."""

from __future__ import annotations

import os

import redis

from taskqueue_backend.embedded import EmbeddedRedis


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
