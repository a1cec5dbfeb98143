"""Consumer registry and the recovery of a dead consumer's in-flight messages.

Each consuming channel heartbeats into ``tq:consumers`` (id -> last beat, ms) and
describes itself in ``tq:consumer:<id>`` (hostname, pid, queues, concurrency, active and
processed tasks). A consumer whose last beat is older than ``heartbeat_timeout`` is stale:
its held messages go back to their queues through ``recover.lua``, which is idempotent, so
any number of live workers or the control plane may run the recovery concurrently and every
message moves exactly once. The consumer then moves to ``tq:offline`` (``offline.lua``,
once), with the counts of what was returned, and the audit log names the tasks. A consumer
that closes cleanly goes offline too (reason ``stopped``); one that resumes is online again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis

from .. import lifecycle
from .keys import GlobalKeys, QueueKeys
from .options import BrokerOptions
from .replies import as_text
from .scripts import Scripts

logger = logging.getLogger(__name__)


#: how long an offline consumer stays listed (unless forgotten first)
OFFLINE_KEEP_MS = 7 * 24 * 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Recovery:
    """What recovering one consumer did."""

    consumer_id: str
    returned: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    queues: dict[str, str] = field(default_factory=dict)  # task id -> queue


def consumer_queues(client: Redis, prefix: str, consumer_id: str) -> list[str]:
    raw = client.hget(GlobalKeys(prefix).consumer(consumer_id), "queues")
    return json.loads(raw) if raw else []


def register(
    client: Redis, prefix: str, consumer_id: str, info: dict[str, str], queues: Iterable[str]
) -> bool:
    """Record a heartbeat; returns False if this consumer was unknown (new, or reaped)."""
    keys = GlobalKeys(prefix)
    pipe = client.pipeline(transaction=False)
    pipe.zadd(keys.consumers, {consumer_id: now_ms()})
    pipe.zrem(keys.offline, consumer_id)  # a consumer that resumed is online again
    fields: dict[Any, Any] = {**info, "queues": json.dumps(sorted(queues)), "state": "online"}
    pipe.hset(keys.consumer(consumer_id), mapping=fields)
    pipe.persist(keys.consumer(consumer_id))
    added, *_ = pipe.execute()
    return not added


def mark_offline(
    scripts: Scripts,
    prefix: str,
    consumer_id: str,
    reason: str,
    *,
    stale_before_ms: int | None = None,
    returned: int = 0,
    dead_lettered: int = 0,
    recovered_by: str | None = None,
    client: Redis | None = None,
) -> bool:
    """Move a consumer to the offline list (once) and add to its counts; with
    ``stale_before_ms``, only if it has not beaten since. True if this call moved it."""
    keys = GlobalKeys(prefix)
    limit = "+inf" if stale_before_ms is None else str(stale_before_ms)
    return bool(
        scripts["offline"](
            keys=[keys.consumers, keys.offline, keys.consumer(consumer_id)],
            args=[
                consumer_id,
                limit,
                now_ms(),
                reason,
                returned,
                dead_lettered,
                recovered_by or "",
                OFFLINE_KEEP_MS,
            ],
            client=client,
        )  # fmt: skip
    )


def prune_offline(client: Redis, prefix: str) -> None:
    """Drop offline entries older than ``OFFLINE_KEEP_MS`` (their hashes expired)."""
    client.zremrangebyscore(GlobalKeys(prefix).offline, "-inf", now_ms() - OFFLINE_KEEP_MS)


def recover_queue(
    scripts: Scripts,
    keys: QueueKeys,
    consumer_id: str,
    options: BrokerOptions,
    *,
    died: bool,
    client: Redis | None = None,
) -> tuple[list[str], list[str]]:
    """Return one consumer's held messages of one queue; (returned, dead-lettered) task ids."""
    returned, buried = scripts["recover"](
        keys=[keys.ready, keys.inflight, keys.signal, keys.state, keys.dead],
        args=[keys.base, consumer_id, options.max_redeliveries, now_ms(), "1" if died else "0"],
        client=client,
    )
    return [as_text(t) or "" for t in returned], [as_text(t) or "" for t in buried]


def recover_consumer(
    client: Redis,
    scripts: Scripts,
    prefix: str,
    consumer_id: str,
    options: BrokerOptions,
    recovered_by: str | None = None,
) -> Recovery:
    """Return every message a dead consumer held, then forget the consumer.

    ``recovered_by`` names the worker (or tool) doing it, for the tasks' history.
    """
    result = Recovery(consumer_id)
    # taken before the messages move, so "returned" sorts before their next "received"
    moved_at = time.time()
    for queue in consumer_queues(client, prefix, consumer_id):
        returned, buried = recover_queue(
            scripts, QueueKeys(prefix, queue), consumer_id, options, died=True, client=client
        )
        result.returned += returned
        result.dead_lettered += buried
        result.queues.update({task_id: queue for task_id in returned + buried})
    for event, task_ids in (("returned", result.returned), ("dead_lettered", result.dead_lettered)):
        for task_id in task_ids:
            detail = {"from_consumer": consumer_id}
            if event == "dead_lettered":
                detail["reason"] = "poison"
            queue = result.queues.get(task_id, "")
            lifecycle.emit(
                lifecycle.MessageEvent(event, task_id, queue, detail, recovered_by, moved_at)
            )
    # a consumer that resumed (SIGSTOP/SIGCONT) and beat meanwhile stays registered
    moved = mark_offline(
        scripts, prefix, consumer_id, "died",
        stale_before_ms=now_ms() - int(options.heartbeat_timeout * 1000),
        returned=len(result.returned), dead_lettered=len(result.dead_lettered),
        recovered_by=recovered_by, client=client,
    )  # fmt: skip
    if moved or result.returned or result.dead_lettered:
        from ..audit import AuditLog

        AuditLog(client, prefix).record(
            recovered_by or "taskqueue", "worker.offline", consumer_id,
            f"missed its heartbeat window (heartbeat_timeout={options.heartbeat_timeout:g} s)",
            returned=result.returned, dead_lettered=result.dead_lettered,
        )  # fmt: skip
    if result.returned or result.dead_lettered:
        logger.warning(
            "consumer %s stopped heartbeating: returned %d message(s) to their queues, "
            "dead-lettered %d poison message(s)",
            consumer_id,
            len(result.returned),
            len(result.dead_lettered),
        )
    return result


def stale_consumers(
    client: Redis, prefix: str, options: BrokerOptions, limit: int = 50
) -> list[str]:
    deadline = now_ms() - int(options.heartbeat_timeout * 1000)
    found = client.zrangebyscore(GlobalKeys(prefix).consumers, "-inf", deadline, 0, limit)
    return [as_text(c) or "" for c in cast(list[bytes], found)]


def reap_stale(
    client: Redis,
    scripts: Scripts,
    prefix: str,
    options: BrokerOptions,
    recovered_by: str | None = None,
) -> list[Recovery]:
    """Recover every consumer that missed its heartbeat window."""
    return [
        recover_consumer(client, scripts, prefix, consumer_id, options, recovered_by)
        for consumer_id in stale_consumers(client, prefix, options)
    ]
