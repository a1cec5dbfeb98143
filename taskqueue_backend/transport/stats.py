"""Counting a queue without scanning it: one ``stats.lua`` call per queue.

Shared by every reader of counts: the operations layer's queue views and metrics, and the
Flower integration. Ages and due times stay epoch milliseconds here; the views convert.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis

from ..clock import now_ms
from .keys import GlobalKeys, QueueKeys
from .options import BrokerOptions
from .replies import as_int, as_text
from .scripts import Scripts


@dataclass
class QueueCounts:
    """What one queue holds, by place (ready per priority as published)."""

    queue: str
    ready_by_priority: dict[int, int] = field(default_factory=dict)
    delayed: int = 0
    inflight: int = 0
    dead: int = 0
    oldest_ready_published_ms: int | None = None
    oldest_lease_ms: int | None = None
    next_due_ms: int | None = None
    paused_since_ms: int | None = None  # set while the queue is paused
    dead_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def ready(self) -> int:
        return sum(self.ready_by_priority.values())


def read_counts(
    client: Redis, scripts: Scripts, prefix: str, options: BrokerOptions, queue: str
) -> QueueCounts:
    keys = QueueKeys(prefix, queue)
    per_rank, delayed, inflight, dead, oldest, lease, due, paused, reasons = scripts["stats"](
        keys=[keys.ready, keys.delayed, keys.inflight, keys.dead],
        args=[keys.base, options.max_priority],
        client=client,
    )
    ready = {
        options.priority_of(int(per_rank[i])): int(per_rank[i + 1])
        for i in range(0, len(per_rank), 2)
    }
    return QueueCounts(
        queue=queue,
        ready_by_priority=dict(sorted(ready.items())),
        delayed=int(delayed),
        inflight=int(inflight),
        dead=int(dead),
        oldest_ready_published_ms=as_int(oldest),
        oldest_lease_ms=as_int(lease),
        next_due_ms=as_int(due),
        paused_since_ms=None if as_text(paused) in (None, "") else as_int(paused) or 0,
        dead_by_reason={
            as_text(reasons[i]) or "": int(reasons[i + 1]) for i in range(0, len(reasons), 2)
        },  # fmt: skip
    )


def listed_queues(client: Redis, prefix: str) -> list[str]:
    """The queues in the list of queues, sorted (some may have expired since)."""
    return queue_names(cast(set[bytes], client.smembers(GlobalKeys(prefix).queues)))


def queue_names(members: Iterable[bytes]) -> list[str]:
    """The members of the list of queues (``SMEMBERS``' reply) as sorted names."""
    return sorted(as_text(q) or "" for q in members)


def known_queues(client: Redis, prefix: str) -> list[str]:
    """Queues that hold anything (a queue that expired or was deleted is left out)."""
    names = listed_queues(client, prefix)
    pipe = client.pipeline(transaction=False)
    for name in names:
        keys = QueueKeys(prefix, name)
        pipe.exists(keys.state, keys.ready, keys.delayed, keys.inflight, keys.dead)
    return [name for name, present in zip(names, pipe.execute(), strict=True) if present]


def consumers_per_queue(
    client: Redis, prefix: str, options: BrokerOptions, queues: Iterable[str] | None = None
) -> dict[str, int]:
    """How many live consumers (beat within ``heartbeat_timeout``) take from each queue."""
    keys = GlobalKeys(prefix)
    deadline = now_ms() - int(options.heartbeat_timeout * 1000)
    live = cast(list[bytes], client.zrangebyscore(keys.consumers, deadline, "+inf"))
    pipe = client.pipeline(transaction=False)
    for consumer_id in live:
        pipe.hget(keys.consumer(as_text(consumer_id) or ""), "queues")
    counts: dict[str, int] = dict.fromkeys(queues or (), 0)
    for raw in pipe.execute():
        for queue in json.loads(as_text(raw) or "[]"):
            counts[queue] = counts.get(queue, 0) + 1
    return counts


def flower_row(counts: QueueCounts, consumers: int) -> dict[str, Any]:
    """One queue as Flower's broker page and ``/api/queues/length`` show queues."""
    return {
        "name": counts.queue,
        "messages": counts.ready + counts.delayed + counts.inflight,
        "messages_ready": counts.ready,
        "messages_unacknowledged": counts.inflight,
        "messages_delayed": counts.delayed,
        "dead_letters": counts.dead,
        "consumers": consumers,
        "paused": counts.paused_since_ms is not None,
    }
