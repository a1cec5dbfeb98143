"""A throwaway Redis Sentinel set for failover tests and benchmarks: a primary, its replica
and three sentinels (quorum 2), all ``redis-server`` processes on free loopback ports.

``SentinelSet`` starts the two servers (``EmbeddedRedis``) and the sentinels, waits until the
replica has synced and every sentinel knows it, and gives the ``sentinel://a;sentinel://b;…``
URL clients use with ``master_name``. ``kill_primary()`` SIGKILLs whichever server is the
primary now; ``wait_for_promotion()`` waits until the sentinels name the other one;
``rejoin()`` restarts the killed server, which the sentinels turn into a replica of the new
primary. ``stop()`` ends every process it started.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from .embedded import EmbeddedRedis, find_redis_server, free_port

DEFAULT_MASTER = "tqfailover"
START_DEADLINE_SECONDS = 20.0


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:g} s")
        time.sleep(0.05)


class SentinelSet:
    """A primary, a replica and three sentinels (quorum 2) on loopback, under ``folder``.

    ``appendonly`` gives both servers an append-only file (``appendfsync always`` unless
    ``server_args`` says otherwise, e.g. ``["--appendfsync", "everysec"]``), so a killed
    server restarts with its data; ``down_after_ms`` is how long the sentinels wait before
    they call a silent primary down."""

    def __init__(
        self,
        folder: Path,
        master_name: str = DEFAULT_MASTER,
        appendonly: bool = True,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10000,
        server_args: Sequence[str] = (),
    ) -> None:
        self.folder = folder
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        # the replica follows this port from its start: it is never picked again
        self.primary = EmbeddedRedis(port=free_port(), appendonly=appendonly,
                                     dir=str(folder / "a"),
                                     extra_args=list(server_args))  # fmt: skip
        follow = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica = EmbeddedRedis(appendonly=appendonly, dir=str(folder / "b"),
                                     extra_args=[*server_args, *follow])  # fmt: skip
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.killed: EmbeddedRedis | None = None

    @property
    def servers(self) -> tuple[EmbeddedRedis, EmbeddedRedis]:
        return self.primary, self.replica

    def start(self) -> SentinelSet:
        try:
            self._start()
        except BaseException:
            self.stop()  # never leave half a set running
            raise
        return self

    def _start(self) -> None:
        for server in self.servers:
            Path(server.dir or "").mkdir(parents=True, exist_ok=True)
            server.start()
        _wait(lambda: redis.Redis(port=self.replica.port).info("replication")
              .get("master_link_status") == "up", START_DEADLINE_SECONDS,
              "the replica did not sync")  # fmt: skip
        for i, port in enumerate(self.sentinel_ports):
            config = self.folder / f"sentinel-{i}.conf"
            name = self.master_name
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                f"sentinel monitor {name} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
            )
            with (self.folder / f"sentinel-{i}.log").open("wb") as log:
                self.sentinels.append(subprocess.Popen(
                    [find_redis_server(), str(config), "--sentinel"], stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True))  # fmt: skip
        _wait(lambda: all(self._knows_replica(p) for p in self.sentinel_ports),
              START_DEADLINE_SECONDS, "the sentinels did not find the replica")  # fmt: skip

    def _knows_replica(self, port: int) -> bool:
        try:
            return bool(redis.Redis(port=port).sentinel_slaves(self.master_name))
        except redis.RedisError:
            return False

    @property
    def url(self) -> str:
        """The broker URL: every sentinel, ``;``-separated (give ``master_name`` too)."""
        return ";".join(f"sentinel://127.0.0.1:{p}/0" for p in self.sentinel_ports)

    def primary_port(self) -> int:
        """The port the sentinels name as the primary now."""
        for port in self.sentinel_ports:
            try:
                client = redis.Redis(port=port)
                found: Any = client.sentinel_get_master_addr_by_name(self.master_name)
                return int(found[1])
            except (redis.RedisError, TypeError):
                continue
        raise RuntimeError("no sentinel answers")

    def current_primary(self) -> EmbeddedRedis:
        port = self.primary_port()
        return next(server for server in self.servers if server.port == port)

    def current_replica(self) -> EmbeddedRedis:
        port = self.primary_port()
        return next(server for server in self.servers if server.port != port)

    def kill_primary(self) -> EmbeddedRedis:
        """SIGKILL the server that is the primary now (a crash); return it."""
        victim = self.current_primary()
        victim.kill()
        self.killed = victim
        return victim

    def wait_for_promotion(self, old_port: int, timeout: float = 60.0) -> float:
        """Wait until the sentinels name a primary other than ``old_port``, and that server
        answers as a primary; return the epoch time it was seen."""

        def promoted() -> bool:
            try:
                port = self.primary_port()
                return (
                    port != old_port
                    and redis.Redis(port=port).info("replication").get("role") == "master"
                )
            except (redis.RedisError, RuntimeError):
                return False

        _wait(promoted, timeout, "the sentinels did not promote the replica")
        return time.time()

    def rejoin(self) -> EmbeddedRedis:
        """Start the killed server again on its port; the sentinels make it a replica."""
        assert self.killed is not None, "no server was killed"
        server, self.killed = self.killed, None
        server.start()
        return server

    def wait_for_replica(self, timeout: float = 60.0) -> float:
        """Wait until the primary has a replica whose link is up; return the epoch time."""

        def linked() -> bool:
            try:
                replica = self.current_replica()
                info = redis.Redis(port=replica.port).info("replication")
                return info.get("role") == "slave" and info.get("master_link_status") == "up"
            except (redis.RedisError, RuntimeError, StopIteration):
                return False

        _wait(linked, timeout, "no replica came back in sync")
        return time.time()

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.kill()
            process.wait()
        self.sentinels.clear()
        for server in self.servers:
            server.stop()

    def __enter__(self) -> SentinelSet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
