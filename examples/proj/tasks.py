"""Tasks of the example project."""

from __future__ import annotations

import time

import redis

from examples.proj.celery import app

ORDER_KEY = "demo:order"

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(app.conf.broker_url)
    return _client


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def report(label: str, key: str = ORDER_KEY) -> None:
    """Print ``label`` and append it to the list ``key``, so the order tasks ran in is visible."""
    print(label)
    _redis().rpush(key, str(label))


@app.task
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def charge(invoice: str, fixed_flag: str) -> str:
    """Fails until the Redis key ``fixed_flag`` exists: the demo's "bug", fixed by a deploy."""
    if not _redis().exists(fixed_flag):
        raise RuntimeError(f"payment API rejected invoice {invoice}")
    return f"charged {invoice}"
