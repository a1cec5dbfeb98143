"""A feed of changes for live views: task events, worker status, dead-letter counts.

``poll()`` returns what changed since the previous call; ``wait(timeout)`` sleeps until there
may be more (a history notification from PostgreSQL, see ``backend.notifications``) or the
timeout passed:

- ``task``: each new row of the history (its id is the feed position: a client resumes after
  the last id it saw, as with SSE's ``Last-Event-ID``), read by primary key, never scanned.
  With PostgreSQL notifications the history is read when it was written to (and every
  ``FALLBACK_SECONDS`` regardless); without them (SQLite, or while the listener reconnects)
  on every poll. Ids are handed out when rows are inserted, not when they commit, so a row
  can appear after a higher one was read: the ids skipped are looked for again for
  ``GAP_SECONDS`` and sent when they show up (without an id of their own, so a reconnecting
  client resumes from the highest);
- ``worker``: a worker process that appeared, or changed state (online, stale, offline);
- ``dlq``: a queue whose number of dead letters changed.

Worker and dead-letter changes are found by comparing snapshots of the broker, so they carry
no position; a client that reconnects gets the current state from the regular views.
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
#: with notifications, the history is still read this often (a notification lost on a
#: reconnect costs at most this long)
FALLBACK_SECONDS = 5.0
#: how long ids skipped in the history are looked for again (a transaction still open)
GAP_SECONDS = 30.0
#: a larger jump in ids is not tracked id by id (a sequence's cache, a bulk rollback)
MAX_GAP = 1000


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
        self._gaps: dict[int, float] = {}  # id skipped -> when it was first missed
        self._generation = -1  # of the notifications the history was last read at
        self._read_at = 0.0

    def _newest(self) -> int:
        return listing.last_event_id(self.ops.results) if self.ops.results is not None else 0

    def wait(self, timeout: float) -> bool:
        """Sleep until the history may have grown or ``timeout`` seconds passed; whether it
        was notified (False: the time passed, or there are no notifications to wait on)."""
        listener = self.ops.notifications()
        if listener is None or not listener.connected.is_set():
            time.sleep(timeout)
            return False
        return listener.wait(self._generation, timeout) != self._generation

    def _history_due(self) -> bool:
        listener = self.ops.notifications()
        if listener is None or not listener.connected.is_set():
            return True
        if listener.generation != self._generation:
            self._generation = listener.generation
            return True
        return time.monotonic() - self._read_at >= FALLBACK_SECONDS or bool(self._gaps)

    def poll(self) -> list[Change]:
        changes = self._task_changes() if self._history_due() else []
        if self.ops.has_broker and time.monotonic() - self._snapshot_at >= SNAPSHOT_INTERVAL:
            self._snapshot_at = time.monotonic()
            changes += self._worker_changes() + self._dead_letter_changes()
        return changes

    def _task_changes(self) -> list[Change]:
        if self.ops.results is None:
            return []
        self._read_at = now = time.monotonic()
        late = listing.events_with_ids(self.ops.results, sorted(self._gaps))
        for r in late:
            self._gaps.pop(int(r.id), None)
        self._gaps = {i: t for i, t in self._gaps.items() if now - t < GAP_SECONDS}
        rows = listing.events_after(self.ops.results, self.last_id)
        expected = self.last_id + 1
        for r in rows:
            if int(r.id) - expected <= MAX_GAP:
                self._gaps.update(dict.fromkeys(range(expected, int(r.id)), now))
            expected = int(r.id) + 1
        if rows:
            self.last_id = int(rows[-1].id)
        return [_task_change(r, None) for r in late] + [_task_change(r, str(r.id)) for r in rows]

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


def _task_change(r: Any, position: str | None) -> Change:
    return Change("task", {"id": int(r.id), "task_id": r.task_id, "event": r.event,
                           "state": r.state, "at": as_utc(r.at), "worker": r.worker,
                           "detail": r.detail}, position)  # fmt: skip
