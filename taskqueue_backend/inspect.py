"""Read and act on the broker's state: one Python API for the CLI and the control plane.

Everything here is cheap: counts come from sorted-set cardinalities and one ``stats.lua``
call per queue, and a task id is found through each queue's ``ids`` index (one ``HGET``
per known queue), never by scanning messages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis

from .transport import recovery
from .transport.keys import GlobalKeys, QueueKeys
from .transport.options import BrokerOptions
from .transport.replies import as_seconds, as_text
from .transport.scripts import Scripts


@dataclass
class QueueStats:
    """Counts for one queue; ages in seconds (``None`` when nothing is there)."""

    queue: str
    ready_by_priority: dict[int, int] = field(default_factory=dict)
    delayed: int = 0
    inflight: int = 0
    dead: int = 0
    oldest_ready_age: float | None = None
    oldest_inflight_age: float | None = None
    next_due_in: float | None = None

    @property
    def ready(self) -> int:
        return sum(self.ready_by_priority.values())


@dataclass
class MessageLocation:
    """Where one message of a task is, and what the broker knows about it."""

    queue: str
    message_id: str
    task_id: str
    state: str  # ready | delayed | inflight | dead
    priority: int | None
    deliveries: int
    recoveries: int
    owner: str | None
    published_at: float | None
    due_at: float | None
    reason: str | None
    detail: str | None
    body: str | None = None


@dataclass
class ConsumerInfo:
    """One consuming channel as its heartbeats describe it."""

    consumer_id: str
    hostname: str
    pid: int | None
    queues: list[str]
    last_beat: float
    stale: bool


class BrokerInspector:
    """The broker's state under one ``global_keyprefix`` of one Redis database."""

    def __init__(
        self, client: Redis, keyprefix: str = "", options: BrokerOptions | None = None
    ) -> None:
        self.client = client
        self.prefix = keyprefix
        self.options = options or BrokerOptions()
        self.scripts = Scripts(client)

    @classmethod
    def from_url(
        cls, url: str, transport_options: Mapping[str, Any] | None = None
    ) -> BrokerInspector:
        opts = dict(transport_options or {})
        return cls(
            Redis.from_url(url),
            str(opts.get("global_keyprefix", "")),
            BrokerOptions.from_transport_options(opts),
        )

    @classmethod
    def from_app(cls, app: Any) -> BrokerInspector:
        """Use a Celery app's ``broker_url`` and ``broker_transport_options``."""
        url = app.conf.broker_url
        if url.startswith("tq://"):
            url = "redis://" + url[len("tq://") :]
        return cls.from_url(url.split(";")[0], app.conf.broker_transport_options)

    @property
    def known_queues_key(self) -> str:
        return GlobalKeys(self.prefix).queues

    # -- queues ----------------------------------------------------------------------

    def queues(self) -> list[str]:
        """Queues that hold anything (a queue that expired or was deleted is left out)."""
        names = sorted(
            as_text(q) or "" for q in self.client.smembers(GlobalKeys(self.prefix).queues)
        )
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            keys = QueueKeys(self.prefix, name)
            pipe.exists(keys.state, keys.ready, keys.delayed, keys.inflight, keys.dead)
        return [name for name, present in zip(names, pipe.execute(), strict=True) if present]

    def queue_stats(self, queue: str) -> QueueStats:
        keys = QueueKeys(self.prefix, queue)
        per_rank, delayed, inflight, dead, oldest, lease, due = self.scripts["stats"](
            keys=[keys.ready, keys.delayed, keys.inflight, keys.dead],
            args=[keys.base, self.options.max_priority],
            client=self.client,
        )
        now = time.time()
        ready = {
            self.options.priority_of(int(per_rank[i])): int(per_rank[i + 1])
            for i in range(0, len(per_rank), 2)
        }
        oldest_at, lease_at, due_at = as_seconds(oldest), as_seconds(lease), as_seconds(due)
        return QueueStats(
            queue=queue,
            ready_by_priority=dict(sorted(ready.items())),
            delayed=int(delayed),
            inflight=int(inflight),
            dead=int(dead),
            oldest_ready_age=None if oldest_at is None else max(now - oldest_at, 0.0),
            oldest_inflight_age=None if lease_at is None else max(now - lease_at, 0.0),
            next_due_in=None if due_at is None else due_at - now,
        )

    def all_stats(self) -> list[QueueStats]:
        return [self.queue_stats(q) for q in self.queues()]

    # -- messages --------------------------------------------------------------------

    def find(self, task_id: str, with_body: bool = False) -> list[MessageLocation]:
        """Every queue holding a message of this task (usually one)."""
        queues = self.queues()
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.hget(QueueKeys(self.prefix, queue).ids, task_id)
        found = []
        for queue, message_id in zip(queues, pipe.execute(), strict=True):
            if message_id is None:
                continue
            location = self.message(queue, as_text(message_id) or "", with_body=with_body)
            if location is not None:
                found.append(location)
        return found

    def message(
        self, queue: str, message_id: str, with_body: bool = False
    ) -> MessageLocation | None:
        raw = self.client.hgetall(QueueKeys(self.prefix, queue).message(message_id))
        if not raw:
            return None
        f = {as_text(k): v for k, v in raw.items()}
        priority = as_text(f.get("priority"))
        return MessageLocation(
            queue=queue,
            message_id=message_id,
            task_id=as_text(f.get("task_id")) or "",
            state=as_text(f.get("state")) or "unknown",
            priority=int(priority) if priority else None,
            deliveries=int(as_text(f.get("deliveries")) or 0),
            recoveries=int(as_text(f.get("recoveries")) or 0),
            owner=as_text(f.get("owner")) or None,
            published_at=as_seconds(f.get("published_at")),
            due_at=as_seconds(f.get("due_at")),
            reason=as_text(f.get("reason")),
            detail=as_text(f.get("detail")),
            body=as_text(f.get("body")) if with_body else None,
        )

    def dead_letters(self, queue: str, limit: int = 100) -> list[MessageLocation]:
        """The newest dead letters of one queue."""
        ids = self.client.zrevrange(QueueKeys(self.prefix, queue).dead, 0, limit - 1)
        found = (self.message(queue, as_text(i) or "") for i in ids)
        return [m for m in found if m is not None]

    def remove(self, task_id: str) -> list[tuple[str, str, str]]:
        """Durably revoke: delete the task's waiting or dead messages.

        Returns ``(queue, outcome, detail)`` per queue that knew the task, where outcome is
        ``removed`` (detail: the state it was in) or ``inflight`` (detail: its consumer;
        a running task is left to Celery's ``revoke``).
        """
        results = []
        for queue in self.queues():
            keys = QueueKeys(self.prefix, queue)
            outcome, detail = self.scripts["remove"](
                keys=[keys.ready, keys.delayed, keys.dead, keys.ids],
                args=[keys.base, task_id],
                client=self.client,
            )
            if as_text(outcome) != "missing":
                results.append((queue, as_text(outcome) or "", as_text(detail) or ""))
        return results

    # -- consumers -------------------------------------------------------------------

    def consumers(self) -> list[ConsumerInfo]:
        keys = GlobalKeys(self.prefix)
        beats = cast(
            list[tuple[bytes, float]], self.client.zrange(keys.consumers, 0, -1, withscores=True)
        )
        deadline = time.time() - self.options.heartbeat_timeout
        pipe = self.client.pipeline(transaction=False)
        for consumer_id, _ in beats:
            pipe.hgetall(keys.consumer(as_text(consumer_id) or ""))
        found = []
        for (consumer_id, score), info in zip(beats, pipe.execute(), strict=True):
            fields = {as_text(k): as_text(v) for k, v in info.items()}
            pid = fields.get("pid")
            found.append(
                ConsumerInfo(
                    consumer_id=as_text(consumer_id) or "",
                    hostname=fields.get("hostname") or "",
                    pid=int(pid) if pid else None,
                    queues=json.loads(fields.get("queues") or "[]"),
                    last_beat=score / 1000,
                    stale=score / 1000 < deadline,
                )
            )
        return found

    def recover_stale(self) -> list[recovery.Recovery]:
        """Return the messages of every consumer that missed its heartbeat window."""
        return recovery.reap_stale(self.client, self.scripts, self.prefix, self.options)
