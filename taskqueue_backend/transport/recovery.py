"""Consumer registry and the recovery of a dead consumer's in-flight messages.

Each consuming channel heartbeats into ``tq:consumers`` (id -> last beat, ms) and describes
itself in ``tq:consumer:<id>`` (node name, pid, the queues it consumes now, the queues it may
hold leases in, concurrency, active and processed tasks). A consumer whose last beat is older
than ``heartbeat_timeout`` is stale: its held messages go back to their queues through
``recover.lua``, which is idempotent, so any number of live workers or the control plane may
run the recovery concurrently and every message moves exactly once. The consumer then moves
to ``tq:offline`` (``offline.lua``, once), with the counts of what was returned, and the audit
log names the tasks. A consumer that closes cleanly goes offline too (reason ``stopped``,
counting what it handed back); one that resumes is online again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis

from .. import lifecycle
from ..clock import now_ms
from ..vocabulary import DeadLetterReason
from .keys import GlobalKeys, QueueKeys
from .options import BrokerOptions
from .replies import as_text
from .scripts import Scripts

logger = logging.getLogger(__name__)


#: how long an offline consumer stays listed (unless forgotten first)
OFFLINE_KEEP_MS = 7 * 24 * 3600 * 1000

#: told what a recovery returned and dead-lettered (the worker's own result backend listens to
#: lifecycle notifications; the operations layer writes to the result store it was given)
Notify = Callable[[list[lifecycle.MessageEvent]], None]


@dataclass
class Recovery:
    """What recovering one consumer did."""

    consumer_id: str
    returned: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    queues: dict[str, str] = field(default_factory=dict)  # task id -> queue
    at: float = field(default_factory=time.time)

    def events(self, recovered_by: str | None) -> list[lifecycle.MessageEvent]:
        """The history events of this recovery: ``returned`` and ``dead_lettered`` (poison)."""
        found = []
        for event, task_ids in ((lifecycle.RETURNED, self.returned),
                                (lifecycle.DEAD_LETTERED, self.dead_lettered)):  # fmt: skip
            for task_id in task_ids:
                detail = {"from_consumer": self.consumer_id}
                if event == lifecycle.DEAD_LETTERED:
                    detail["reason"] = DeadLetterReason.POISON
                found.append(lifecycle.MessageEvent(
                    event, task_id, self.queues.get(task_id, ""), detail, recovered_by, self.at
                ))  # fmt: skip
        return found


def held_queues(client: Redis, prefix: str, consumer_id: str) -> list[str]:
    """Every queue the consumer may hold leases in (what a recovery must look at)."""
    raw = cast(list[Any], client.hmget(GlobalKeys(prefix).consumer(consumer_id), "held", "queues"))
    held, queues = (json.loads(v) if v else [] for v in raw)
    return sorted(set(held) | set(queues))


def register(
    client: Redis,
    prefix: str,
    consumer_id: str,
    info: dict[str, str],
    consuming: Iterable[str],
    held: Iterable[str],
) -> bool:
    """Record a heartbeat; returns False if this consumer was unknown (new, or reaped).

    ``consuming`` are the queues the consumer takes messages from now (what every view
    shows); ``held`` every queue it leased from since it started (what a recovery looks at).
    """
    keys = GlobalKeys(prefix)
    pipe = client.pipeline(transaction=False)
    pipe.zadd(keys.consumers, {consumer_id: now_ms()})
    pipe.zrem(keys.offline, consumer_id)  # a consumer that resumed is online again
    fields: dict[Any, Any] = {**info, "queues": json.dumps(sorted(consuming)),
                              "held": json.dumps(sorted(held)), "state": "online"}  # fmt: skip
    pipe.hset(keys.consumer(consumer_id), mapping=fields)
    pipe.persist(keys.consumer(consumer_id))
    added, *_ = pipe.execute()
    return not added


def count_failure(client: Redis, prefix: str, hostname: str, pid: int) -> None:
    """One more task failed in worker process ``pid`` of node ``hostname``."""
    key = GlobalKeys(prefix).failures(hostname, pid)
    pipe = client.pipeline(transaction=False)
    pipe.incr(key)
    pipe.pexpire(key, OFFLINE_KEEP_MS)
    pipe.execute()


def reset_failures(client: Redis, prefix: str, hostname: str, pid: int) -> None:
    """A new worker process starts counting at 0 (a restarted container reuses name and pid)."""
    client.delete(GlobalKeys(prefix).failures(hostname, pid))


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
    notify: Notify = lifecycle.emit_all,
) -> Recovery:
    """Return every message a dead consumer held, then move the consumer offline.

    ``recovered_by`` names the worker (or operator) doing it, for the tasks' history, which
    ``notify`` is told about.
    """
    result = Recovery(consumer_id)  # its time is taken before the messages move, so
    # "returned" sorts before their next "received"
    for queue in held_queues(client, prefix, consumer_id):
        returned, buried = recover_queue(
            scripts, QueueKeys(prefix, queue), consumer_id, options, died=True, client=client
        )
        result.returned += returned
        result.dead_lettered += buried
        result.queues.update({task_id: queue for task_id in returned + buried})
    notify(result.events(recovered_by))
    # a consumer that resumed (SIGSTOP/SIGCONT) and beat meanwhile stays registered
    moved = mark_offline(
        scripts, prefix, consumer_id, "died",
        stale_before_ms=now_ms() - int(options.heartbeat_timeout * 1000),
        returned=len(result.returned), dead_lettered=len(result.dead_lettered),
        recovered_by=recovered_by, client=client,
    )  # fmt: skip
    if moved or result.returned or result.dead_lettered:
        from .audit_stream import record

        record(
            client, prefix, recovered_by or "taskqueue", "worker.offline", consumer_id,
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
    notify: Notify = lifecycle.emit_all,
) -> list[Recovery]:
    """Recover every consumer that missed its heartbeat window."""
    return [
        recover_consumer(client, scripts, prefix, consumer_id, options, recovered_by, notify)
        for consumer_id in stale_consumers(client, prefix, options)
    ]
