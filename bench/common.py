"""Helpers shared by the benchmarks and the apps they run."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

_clients: dict[tuple[int, str], redis.Redis] = {}


def process_client(url: str) -> redis.Redis:
    """One Redis client per process (a forked pool process makes its own)."""
    key = (os.getpid(), url)
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(url)
    return _clients[key]


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"benchmark: timed out waiting for {what}")
