"""The worker registry: which workers are online, stale or offline — one API for every tool.

It is fed by the broker's consumer heartbeats (``transport.heartbeat``): each consuming
worker refreshes ``{tq}:consumers`` (last beat) and its ``{tq}:consumer:<id>`` hash (node
name, pid, queues, concurrency, active tasks, processed tasks) every ``heartbeat_interval``.

- **online**: beat within ``heartbeat_timeout``;
- **stale**: missed its window; its in-flight messages are about to be returned by the first
  live worker (or the control plane) that notices — each message moves exactly once;
- **offline**: gone — stopped cleanly, or died and its messages were returned (counted per
  worker, each task's return written to its history and the whole recovery to the audit
  log). Offline entries stay listed for ``OFFLINE_KEEP`` (7 days) unless forgotten.

Failed-task counts are kept per node name (``{tq}:failed``), so they survive a restart of
the same node; forgetting the node clears them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

from .audit import AuditLog, default_actor
from .errors import InvalidRequest
from .inspect import BrokerInspector
from .transport import recovery
from .transport.keys import GlobalKeys
from .transport.replies import as_int, as_seconds, as_text


@dataclass
class WorkerInfo:
    consumer_id: str
    hostname: str
    state: str  # online | stale | offline
    pid: int | None = None
    queues: list[str] = field(default_factory=list)
    concurrency: int | None = None
    active: int | None = None
    processed: int | None = None
    failed: int = 0
    started_at: float | None = None
    last_heartbeat: float | None = None
    offline_at: float | None = None
    offline_reason: str | None = None
    returned: int = 0
    dead_lettered: int = 0
    recovered_by: str | None = None


class WorkerRegistry:
    """The workers under one broker key prefix."""

    def __init__(
        self, inspector: BrokerInspector, actor: str | None = None, audit: AuditLog | None = None
    ) -> None:
        self.inspector = inspector
        self.client = inspector.client
        self.keys = GlobalKeys(inspector.prefix)
        self.options = inspector.options
        self.actor = actor or default_actor()
        self.audit = audit or AuditLog(self.client, inspector.prefix)

    @classmethod
    def from_app(cls, app: Any, actor: str | None = None) -> WorkerRegistry:
        return cls(BrokerInspector.from_app(app), actor)

    def workers(self, include_offline: bool = True) -> list[WorkerInfo]:
        """Online and stale workers (newest beat first), then offline ones (newest first)."""
        now = time.time()
        recovery.prune_offline(self.client, self.inspector.prefix)
        Scored = list[tuple[bytes, float]]
        live = cast(Scored, self.client.zrevrange(self.keys.consumers, 0, -1, withscores=True))
        gone: Scored = []
        if include_offline:
            gone = cast(Scored, self.client.zrevrange(self.keys.offline, 0, -1, withscores=True))
        pipe = self.client.pipeline(transaction=False)
        for consumer_id, _ in live + gone:
            pipe.hgetall(self.keys.consumer(as_text(consumer_id) or ""))
        pipe.hgetall(self.keys.failed)
        *hashes, failed_raw = pipe.execute()
        failed = {as_text(k) or "": as_int(v) or 0 for k, v in failed_raw.items()}
        deadline = now - self.options.heartbeat_timeout
        found = []
        for index, ((consumer_id, score), raw) in enumerate(zip(live + gone, hashes, strict=True)):
            f = {as_text(k) or "": v for k, v in raw.items()}
            offline = index >= len(live)
            if offline and not f:
                continue  # expired meanwhile
            hostname = as_text(f.get("hostname")) or ""
            beat = as_seconds(f.get("last_beat")) if offline else score / 1000
            state = "offline" if offline else ("stale" if score / 1000 < deadline else "online")
            found.append(
                WorkerInfo(
                    consumer_id=as_text(consumer_id) or "",
                    hostname=hostname,
                    state=state,
                    pid=as_int(f.get("pid")),
                    queues=json.loads(as_text(f.get("queues")) or "[]"),
                    concurrency=as_int(f.get("concurrency")),
                    active=None if offline else as_int(f.get("active")),
                    processed=as_int(f.get("processed")),
                    failed=failed.get(hostname, 0),
                    started_at=as_seconds(f.get("started_at")),
                    last_heartbeat=beat,
                    offline_at=as_seconds(f.get("offline_at")),
                    offline_reason=as_text(f.get("offline_reason")),
                    returned=as_int(f.get("returned")) or 0,
                    dead_lettered=as_int(f.get("dead_lettered")) or 0,
                    recovered_by=as_text(f.get("recovered_by")) or None,
                )
            )
        return found

    def find(self, ident: str) -> list[WorkerInfo]:
        """Workers whose consumer id or node name is ``ident``."""
        return [w for w in self.workers() if ident in (w.consumer_id, w.hostname)]

    def recover_stale(self) -> list[recovery.Recovery]:
        """Return the messages of every stale worker now (workers do it on their heartbeat)."""
        return recovery.reap_stale(
            self.client, self.inspector.scripts, self.inspector.prefix, self.options, self.actor
        )

    def forget(self, ident: str, reason: str = "") -> list[str]:
        """Remove offline workers (by consumer id or node name) from every view and count."""
        found = self.find(ident)
        if not found:
            raise InvalidRequest(f"no worker with consumer id or node name {ident!r}")
        alive = [w.consumer_id for w in found if w.state != "offline"]
        if alive:
            raise InvalidRequest(
                f"{ident} is not offline ({', '.join(alive)}): only a worker that is gone can be "
                "forgotten; stop it, or wait until its stale window has passed"
            )
        pipe = self.client.pipeline(transaction=True)
        for worker in found:
            pipe.zrem(self.keys.offline, worker.consumer_id)
            pipe.delete(self.keys.consumer(worker.consumer_id))
        hostnames = {w.hostname for w in found}
        if not [w for w in self.workers() if w.hostname in hostnames and w.state != "offline"]:
            for hostname in hostnames:
                pipe.hdel(self.keys.failed, hostname)
        pipe.execute()
        forgotten = [w.consumer_id for w in found]
        self.audit.record(self.actor, "worker.forget", ident, reason, consumers=forgotten)
        return forgotten
