"""Queues: counts, where a task's message is, removing a waiting task, purging.

Everything here is cheap: counts come from sorted-set cardinalities and one ``stats.lua`` call
per queue, and a task id is found through each queue's ``ids`` index (one ``HGET`` per known
queue), never by scanning messages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ..clock import from_epoch_ms, now_ms
from ..transport.admin import QueueCounts, StoredMessage
from . import history
from .errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from .api import Operations
    from .broker import BrokerAccess


@dataclass
class QueueStats:
    """One queue's counts; ages in seconds (``None`` when nothing is there)."""

    queue: str
    ready: int = 0
    ready_by_priority: dict[int, int] = field(default_factory=dict)
    delayed: int = 0
    inflight: int = 0
    dead: int = 0
    dead_by_reason: dict[str, int] = field(default_factory=dict)
    consumers: int = 0
    oldest_ready_age: float | None = None
    oldest_inflight_age: float | None = None
    next_due_at: datetime | None = None
    paused: bool = False  # no consumer leases from it until it is resumed
    paused_at: datetime | None = None


@dataclass
class MessageLocation:
    """Where one message of a task is, and what the broker knows about it."""

    queue: str
    message_id: str
    task_id: str
    task_name: str | None
    state: str  # ready | delayed | inflight | dead | replaying
    priority: int | None
    deliveries: int
    recoveries: int
    replays: int
    owner: str | None
    published_at: datetime | None
    due_at: datetime | None
    leased_at: datetime | None
    dead_at: datetime | None
    reason: str | None
    detail: str | None


@dataclass
class RemoveOutcome:
    """What removing a task's waiting messages did (a durable revoke)."""

    task_id: str
    removed: list[MessageLocation] = field(default_factory=list)
    in_flight: list[MessageLocation] = field(default_factory=list)  # left to their worker
    dead: list[MessageLocation] = field(default_factory=list)  # left to the dead-letter tools
    result_revoked: bool = False  # the result store now says REVOKED


def location(message: StoredMessage) -> MessageLocation:
    return MessageLocation(
        queue=message.queue,
        message_id=message.message_id,
        task_id=message.task_id,
        task_name=message.headers.get("task"),
        state=message.state,
        priority=message.priority,
        deliveries=message.deliveries,
        recoveries=message.recoveries,
        replays=message.replays,
        owner=message.owner,
        published_at=message.published_at,
        due_at=message.due_at,
        leased_at=message.leased_at,
        dead_at=message.dead_at,
        reason=message.reason,
        detail=message.detail,
    )


class Queues:
    """The queues of one broker."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @property
    def broker(self) -> BrokerAccess:
        return self.ops.broker

    def names(self) -> list[str]:
        """Queues that hold anything (a queue that expired or was deleted is left out)."""
        return self.broker.admin.queue_names()

    def _stats(self, counts: QueueCounts, consumers: int) -> QueueStats:
        now = time.time() * 1000
        oldest, lease = counts.oldest_ready_published_ms, counts.oldest_lease_ms
        return QueueStats(
            queue=counts.queue,
            ready=counts.ready,
            ready_by_priority=counts.ready_by_priority,
            delayed=counts.delayed,
            inflight=counts.inflight,
            dead=counts.dead,
            dead_by_reason=counts.dead_by_reason,
            consumers=consumers,
            oldest_ready_age=None if oldest is None else max(now - oldest, 0.0) / 1000,
            oldest_inflight_age=None if lease is None else max(now - lease, 0.0) / 1000,
            next_due_at=from_epoch_ms(counts.next_due_ms),
            paused=counts.paused_since_ms is not None,
            paused_at=from_epoch_ms(counts.paused_since_ms) if counts.paused_since_ms else None,
        )

    def _counts(self, queue: str) -> QueueCounts:
        return self.broker.admin.counts(queue)

    def all(self) -> list[QueueStats]:
        """Every queue that holds anything, with its counts and live consumers."""
        names = self.names()
        consumers = self.broker.admin.consumers(names)
        return [self._stats(self._counts(q), consumers.get(q, 0)) for q in names]

    def stats(self, queue: str) -> QueueStats:
        self._known(queue)
        consumers = self.broker.admin.consumers([queue])
        return self._stats(self._counts(queue), consumers.get(queue, 0))

    # -- messages ----------------------------------------------------------------------------

    def message(self, queue: str, message_id: str) -> StoredMessage | None:
        return self.broker.admin.message(queue, message_id)

    def find(self, task_id: str) -> list[MessageLocation]:
        """Every queue holding a message of this task (usually one)."""
        return [location(m) for m in self.find_messages(task_id)]

    def find_messages(self, task_id: str) -> list[StoredMessage]:
        return self.broker.admin.task_messages(task_id)

    def delayed(self, queue: str, limit: int = 100) -> list[MessageLocation]:
        """The queue's delayed messages, soonest first."""
        if not 1 <= limit <= 10_000:
            raise InvalidRequest(f"limit must be from 1 to 10000, got {limit}")
        return [location(m) for m in self.broker.admin.delayed(queue, limit)]

    # -- changing them -----------------------------------------------------------------------

    def remove(self, ident: str, reason: str = "") -> RemoveOutcome:
        """Durably revoke a task that has not started: delete its waiting (ready or delayed)
        messages, so it can never run, and record it as REVOKED in the result store, with a
        history row naming the actor. A message in flight is left to its worker (revoke it
        through Celery's remote control) and reported."""
        task_id = self.ops.tasks.resolve(ident)
        outcome = RemoveOutcome(task_id)
        for queue in self.names():
            before = self.message_of(queue, task_id)
            state = self.broker.admin.remove_waiting(queue, task_id)
            if state == "removed" and before is not None:
                outcome.removed.append(location(before))
            elif state == "inflight" and before is not None:
                outcome.in_flight.append(location(before))
            elif state == "dead" and before is not None:
                outcome.dead.append(location(before))
        if not (outcome.removed or outcome.in_flight or outcome.dead):
            raise NotFound(f"no message of task {task_id} waits in {self.broker.describe()}")
        if outcome.removed:
            outcome.result_revoked = self._revoke_result(task_id, outcome, reason)
            self.ops.audit.record(
                self.ops.actor, "task.remove", task_id, reason,
                queues=sorted({m.queue for m in outcome.removed}),
                states=[m.state for m in outcome.removed],
            )  # fmt: skip
        return outcome

    def message_of(self, queue: str, task_id: str) -> StoredMessage | None:
        [message_id] = self.broker.admin.message_ids_of([queue], task_id)
        return None if message_id is None else self.message(queue, message_id)

    def _revoke_result(self, task_id: str, outcome: RemoveOutcome, reason: str) -> bool:
        first = outcome.removed[0]
        detail = {"actor": self.ops.actor, "reason": reason, "removed_from": first.queue,
                  "was": first.state}  # fmt: skip
        columns = {"name": first.task_name, "queue": first.queue}
        return history.revoke(self.ops, task_id, columns, detail)

    def _known(self, queue: str) -> None:
        if queue not in self.names():
            raise NotFound(f"no queue named {queue!r} holds anything in {self.broker.describe()}")

    def pause(self, queue: str, reason: str = "") -> bool:
        """Stop every consumer from leasing from ``queue`` (durable, in the broker) until it is
        resumed; publishing still works. A queue that holds nothing yet can be paused ahead
        (before a deploy starts sending to it). False if it was paused already."""
        if not queue or len(queue) > 255:
            raise InvalidRequest("give the queue's name (at most 255 characters)")
        done = self.broker.admin.pause(queue, now_ms(), self.ops.actor, reason)
        self.ops.audit.record(self.ops.actor, "queue.pause", queue, reason, changed=done)
        return done

    def resume(self, queue: str, reason: str = "") -> bool:
        """Let consumers lease from ``queue`` again (they are woken at once). False if it was
        not paused."""
        self._known(queue)
        done = self.broker.admin.resume(queue)
        self.ops.audit.record(self.ops.actor, "queue.resume", queue, reason, changed=done)
        return done

    def purge(
        self, queue: str, *, include_delayed: bool = True, reason: str = "", dry_run: bool = False
    ) -> int:
        """Delete the queue's waiting messages (ready, and delayed unless told to keep them);
        messages in flight stay with their workers, dead letters stay for an operator. A dry
        run only counts what would go."""
        self._known(queue)
        if dry_run:
            counts = self.stats(queue)
            return counts.ready + (counts.delayed if include_delayed else 0)
        gone = self.broker.admin.purge(queue, include_delayed)
        self.ops.audit.record(self.ops.actor, "queue.purge", queue, reason, purged=gone,
                              include_delayed=include_delayed)  # fmt: skip
        return gone
