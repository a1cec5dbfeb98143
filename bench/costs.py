"""What one task costs, read from the servers and processes themselves.

``RedisSnapshot`` holds ``INFO commandstats`` and ``INFO cpu`` at one moment; the difference of
two, divided by the tasks in between, is the per-task cost of that phase: Redis commands
(every command Redis ran, including the ones a Lua script runs, by name) and Redis CPU
microseconds. ``worker_cpu_seconds`` adds up the CPU time of a worker's main process and its
pool processes, ``server_cpu_seconds`` that of a server's processes (PostgreSQL's backends).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis

from taskqueue_backend.loadtest.rss import process_tree

#: the benchmark's own reads of the server, left out of what the tasks cost
_OWN = ("info", "get", "llen", "lrange", "flushdb", "ping", "client|setname", "hello")


@dataclass(frozen=True)
class RedisSnapshot:
    calls: Counter[str]
    usec: Counter[str]
    cpu: float

    @classmethod
    def take(cls, client: redis.Redis) -> RedisSnapshot:
        calls: Counter[str] = Counter()
        usec: Counter[str] = Counter()
        stats: dict[str, Any] = client.info("commandstats")
        for name, values in stats.items():
            command = name.removeprefix("cmdstat_")
            calls[command] = int(values["calls"])
            usec[command] = int(values["usec"])
        return cls(calls, usec, redis_cpu_seconds(client))


@dataclass(frozen=True)
class PhaseCost:
    """Per task: Redis commands run (by name), their microseconds, and the server's CPU."""

    commands: float
    command_usec: float
    cpu_usec: float
    by_command: dict[str, float]

    def summary(self, least: float = 0.05) -> str:
        """The figures, with every command run at least ``least`` times per task."""
        ranked = sorted(
            ((k, v) for k, v in self.by_command.items() if v >= least), key=lambda kv: -kv[1]
        )
        listed = ", ".join(f"{k} {v:.2f}" for k, v in ranked)
        return (f"{self.commands:.2f} commands ({listed}), {self.command_usec:.1f} µs in "
                f"commands, {self.cpu_usec:.1f} µs Redis CPU")  # fmt: skip


def phase_cost(before: RedisSnapshot, after: RedisSnapshot, tasks: int) -> PhaseCost:
    calls = after.calls - before.calls
    usec = after.usec - before.usec
    for own in _OWN:
        calls.pop(own, None)
        usec.pop(own, None)
    return PhaseCost(
        commands=sum(calls.values()) / tasks,
        command_usec=sum(usec.values()) / tasks,
        cpu_usec=(after.cpu - before.cpu) * 1e6 / tasks,
        by_command={k: v / tasks for k, v in calls.items()},
    )


def redis_cpu_seconds(client: redis.Redis) -> float:
    """User + system CPU seconds the Redis server behind ``client`` has used so far."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def worker_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every process under it, now."""
    return sum(_cpu_seconds(each) for each in process_tree(pid))


def server_cpu_seconds(name: str) -> float:
    """User + system CPU seconds of every running process called ``name`` (``postgres``: the
    server and its backends), now; a process that has exited no longer counts."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _command(int(entry)) == name:
            total += _cpu_seconds(int(entry))
    return total


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
