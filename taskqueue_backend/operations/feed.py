"""A feed of changes for live views: task events, worker status, dead-letter counts.

``poll()`` returns what changed since the previous call:

- ``task``: each new row of the history (its id is the feed position: a client resumes after
  the last id it saw, as with SSE's ``Last-Event-ID``), read by primary key, never scanned;
- ``worker``: a worker process that appeared, or changed state (online, stale, offline);
- ``dlq``: a queue whose number of dead letters changed.

Worker and dead-letter changes are found by comparing snapshots, so they carry no position; a
client that reconnects gets the current state from the regular views.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..backend import listing
from ..clock import as_utc

if TYPE_CHECKING:
    from .api import Operations

#: how often worker and dead-letter snapshots are compared (seconds)
SNAPSHOT_INTERVAL = 1.0


@dataclass
class Change:
    kind: str  # task | worker | dlq
    data: dict[str, Any]
    id: str | None = None  # the history row id, for task changes


class ChangeFeed:
    def __init__(self, ops: Operations, after: int | None = None) -> None:
        """``after``: the last history id the client saw (None: only changes from now on)."""
        self.ops = ops
        self.last_id = after if after is not None else self._newest()
        self._workers: dict[str, str] | None = None
        self._dead: dict[str, int] | None = None
        self._snapshot_at = 0.0

    def _newest(self) -> int:
        return listing.last_event_id(self.ops.results) if self.ops.results is not None else 0

    def poll(self) -> list[Change]:
        changes = self._task_changes()
        if self.ops.has_broker and time.monotonic() - self._snapshot_at >= SNAPSHOT_INTERVAL:
            self._snapshot_at = time.monotonic()
            changes += self._worker_changes() + self._dead_letter_changes()
        return changes

    def _task_changes(self) -> list[Change]:
        if self.ops.results is None:
            return []
        rows = listing.events_after(self.ops.results, self.last_id)
        if rows:
            self.last_id = int(rows[-1].id)
        return [
            Change(
                "task",
                {
                    "task_id": r.task_id,
                    "event": r.event,
                    "state": r.state,
                    "at": as_utc(r.at),
                    "worker": r.worker,
                    "detail": r.detail,
                },
                str(r.id),
            )  # fmt: skip
            for r in rows
        ]

    def _worker_changes(self) -> list[Change]:
        workers = {w.consumer_id: w for w in self.ops.workers.all()}
        now = {c: w.state for c, w in workers.items()}
        before, self._workers = self._workers, now
        if before is None:
            return []
        return [
            Change(
                "worker",
                {
                    "consumer_id": c,
                    "hostname": workers[c].hostname,
                    "state": state,
                    "previous": before.get(c),
                },
            )  # fmt: skip
            for c, state in now.items()
            if before.get(c) != state
        ]

    def _dead_letter_changes(self) -> list[Change]:
        now = {q.queue: q.dead for q in self.ops.queues.all()}
        before, self._dead = self._dead, now
        if before is None:
            return []
        return [
            Change("dlq", {"queue": q, "dead": n, "previous": before.get(q, 0)})
            for q, n in now.items()
            if before.get(q, 0) != n
        ]
