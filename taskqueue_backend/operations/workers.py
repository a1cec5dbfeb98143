"""Workers: which are online, stale or offline, recovering the stale, forgetting the gone.

The one source of truth is the broker's consumer registry, fed by each consuming worker's
heartbeats (``transport.heartbeat``): every ``heartbeat_interval`` a worker refreshes its last
beat and its hash (node name, pid, the queues it consumes now, concurrency, active and
processed tasks); its pool processes count its failed tasks.

- **online**: beat within ``heartbeat_timeout``;
- **stale**: missed its window; its in-flight messages are about to be returned by the first
  live worker (or an operator's ``recover_stale``) that notices — each message moves once;
- **offline**: gone — stopped cleanly (reason ``stopped``, with the messages it handed back
  counted as returned), or died and its messages were returned (reason ``died``, with who
  recovered them). Offline entries stay listed for 7 days unless forgotten.

Processed and failed counts are the worker process's own since it started (one consumer id
per process): a restarted worker starts again at 0 under a new consumer id.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from ..clock import from_epoch, from_epoch_ms
from ..transport.replies import as_int, as_seconds, as_text
from ..vocabulary import WorkerState, values
from . import history
from .errors import Conflict, NotFound, one_of

if TYPE_CHECKING:
    from .api import Operations
    from .broker import BrokerAccess

STATES = values(WorkerState)


@dataclass
class WorkerInfo:
    """One worker process, as its consumer heartbeats describe it."""

    consumer_id: str
    hostname: str  # the Celery node name (celery@host)
    state: str  # online | stale | offline
    pid: int | None = None
    queues: list[str] = field(default_factory=list)
    concurrency: int | None = None
    active: int | None = None
    processed: int | None = None
    failed: int = 0
    started_at: datetime | None = None
    last_heartbeat: datetime | None = None
    seconds_since_heartbeat: float | None = None
    offline_at: datetime | None = None
    offline_reason: str | None = None
    returned: int = 0
    dead_lettered: int = 0
    recovered_by: str | None = None


@dataclass
class RecoveryOutcome:
    """What recovering one stale worker did."""

    consumer_id: str
    returned: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)


class Workers:
    """The workers of one broker."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @property
    def broker(self) -> BrokerAccess:
        return self.ops.broker

    def all(self, status: str | None = None) -> list[WorkerInfo]:
        """Online and stale workers (newest beat first), then offline ones (newest first)."""
        if status is not None:
            status = one_of(WorkerState, status, "worker status")
        now = time.time()
        live, gone = self.broker.admin.registered(
            live=status != WorkerState.OFFLINE, offline=status in (None, WorkerState.OFFLINE)
        )
        infos = []
        deadline = now - self.broker.options.heartbeat_timeout
        for index, (consumer_id, score, raw) in enumerate(live + gone):
            offline = index >= len(live)
            info = self._info(consumer_id, raw, score, offline, deadline, now)
            if status is None or info.state == status:
                infos.append(info)
        self._add_failures(infos)
        return infos

    def _info(
        self, consumer_id: str, f: dict[str, Any], score: float, offline: bool, deadline: float,
        now: float,
    ) -> WorkerInfo:  # fmt: skip
        beat = as_seconds(f.get("last_beat")) if offline else score / 1000
        state = (
            WorkerState.OFFLINE
            if offline
            else (WorkerState.STALE if score / 1000 < deadline else WorkerState.ONLINE)
        )
        return WorkerInfo(
            consumer_id=consumer_id,
            hostname=as_text(f.get("hostname")) or "",
            state=state,
            pid=as_int(f.get("pid")),
            queues=json.loads(as_text(f.get("queues")) or "[]"),
            concurrency=as_int(f.get("concurrency")),
            active=None if offline else as_int(f.get("active")),
            processed=as_int(f.get("processed")),
            started_at=from_epoch_ms(as_int(f.get("started_at"))),
            last_heartbeat=from_epoch(beat),
            seconds_since_heartbeat=None if beat is None else max(now - beat, 0.0),
            offline_at=from_epoch(as_seconds(f.get("offline_at"))),
            offline_reason=as_text(f.get("offline_reason")),
            returned=as_int(f.get("returned")) or 0,
            dead_lettered=as_int(f.get("dead_lettered")) or 0,
            recovered_by=as_text(f.get("recovered_by")) or None,
        )

    def _add_failures(self, infos: list[WorkerInfo]) -> None:
        counts = self.broker.admin.failures([(w.hostname, w.pid or 0) for w in infos])
        for w, count in zip(infos, counts, strict=True):
            w.failed = count

    def get(self, ident: str) -> list[WorkerInfo]:
        """The worker processes with this consumer id or node name (a node restarted several
        times has one per process); ``NotFound`` if none."""
        found = [w for w in self.all() if ident in (w.consumer_id, w.hostname)]
        if not found:
            raise NotFound(f"no worker with consumer id or node name {ident!r} in "
                           f"{self.broker.describe()}")  # fmt: skip
        return found

    def recover_stale(self, reason: str = "") -> list[RecoveryOutcome]:
        """Return the messages of every stale worker now (live workers also do it on their
        heartbeat); the tasks' history and the audit log say who did it."""
        notify = partial(history.record_broker_events, self.ops)
        done = self.broker.admin.recover_every_stale(self.ops.actor, notify)
        if done:
            target = ",".join(r.consumer_id for r in done)[:500]
            returned = sum(len(r.returned) for r in done)
            buried = sum(len(r.dead_lettered) for r in done)
            self.ops.audit.record(self.ops.actor, "worker.recover", target, reason,
                                  returned=returned, dead_lettered=buried)  # fmt: skip
        return [RecoveryOutcome(r.consumer_id, r.returned, r.dead_lettered) for r in done]

    def recover(self, ident: str, reason: str = "") -> list[RecoveryOutcome]:
        """Return the messages of this stale worker now (by node name or consumer id)."""
        found = self.get(ident)
        stale = [w for w in found if w.state == WorkerState.STALE]
        if not stale:
            states = ", ".join(sorted({w.state for w in found}))
            raise Conflict(f"{ident} is not stale ({states}): only a worker that missed its "
                           "heartbeat window is recovered")  # fmt: skip
        notify = partial(history.record_broker_events, self.ops)
        done = [self.broker.admin.recover(w.consumer_id, self.ops.actor, notify) for w in stale]
        self.ops.audit.record(self.ops.actor, "worker.recover", ident, reason,
                              returned=sum(len(r.returned) for r in done),
                              dead_lettered=sum(len(r.dead_lettered) for r in done))  # fmt: skip
        return [RecoveryOutcome(r.consumer_id, r.returned, r.dead_lettered) for r in done]

    def shutdown(self, ident: str, reason: str = "") -> list[str]:
        """Ask the live worker (node name or consumer id) to shut down warmly, through Celery's
        remote control; its running tasks finish, its prefetched messages go back."""
        alive = [w for w in self.get(ident) if w.state != WorkerState.OFFLINE]
        if not alive:
            raise Conflict(f"{ident} is offline: there is nothing to shut down")
        nodes = sorted({w.hostname for w in alive if w.hostname})
        self.ops.celery.control.shutdown(destination=nodes)
        self.ops.audit.record(self.ops.actor, "worker.shutdown", ident, reason, nodes=nodes)
        return nodes

    def forget(self, ident: str, reason: str = "") -> list[str]:
        """Remove offline workers (by consumer id or node name) from every view and count."""
        found = self.get(ident)
        alive = [w for w in found if w.state != WorkerState.OFFLINE]
        if alive:
            offline = [w.consumer_id for w in found if w.state == WorkerState.OFFLINE]
            hint = (
                f"; forget its offline processes by consumer id: {', '.join(offline)}"
                if offline
                else "; stop it, or wait until its stale window has passed"
            )
            raise Conflict(
                f"{ident} is not offline ({', '.join(f'{w.consumer_id} {w.state}' for w in alive)})"
                f": only a worker that is gone can be forgotten{hint}"
            )  # fmt: skip
        running = {(w.hostname, w.pid) for w in self.all() if w.state != WorkerState.OFFLINE}
        self.broker.admin.forget([(w.consumer_id, w.hostname, w.pid or 0) for w in found],
                                 keep_counts={(h, p or 0) for h, p in running})  # fmt: skip
        forgotten = [w.consumer_id for w in found]
        self.ops.audit.record(self.ops.actor, "worker.forget", ident, reason,
                              consumers=forgotten)  # fmt: skip
        return forgotten
