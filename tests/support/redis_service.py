"""Finding the Redis the tests run against, and removing only the keys a test created."""

from __future__ import annotations

import redis


def ping_error(url: str) -> str | None:
    """None when a Redis at ``url`` answers PING, else a one-line description of why not."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def delete_keys_containing(client: redis.Redis, fragment: str) -> int:
    """UNLINK every key whose name contains ``fragment``; return how many were removed.

    Matching anywhere (not only at the start) also catches keys where the prefix sits inside a
    ``{hash tag}``. Callers pass a random per-test fragment, so nothing else can match.
    """
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
