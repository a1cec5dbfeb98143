"""Key layout of the broker in Redis.

Every key of one queue starts with ``<global_keyprefix>tq:{<queue>}`` so that a queue
never spans Redis Cluster slots; the Lua scripts derive per-message keys from that base.
Global keys (the consumer registry, the set of known queues) share the hash tag ``{tq}``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueKeys:
    """Names of the Redis keys that hold one queue."""

    prefix: str
    queue: str

    @property
    def base(self) -> str:
        return f"{self.prefix}tq:{{{self.queue}}}"

    @property
    def ready(self) -> str:
        return self.base + ":ready"

    @property
    def delayed(self) -> str:
        return self.base + ":delayed"

    @property
    def inflight(self) -> str:
        return self.base + ":inflight"

    @property
    def dead(self) -> str:
        return self.base + ":dead"

    @property
    def replaying(self) -> str:
        """Dead letters claimed by a replay that is moving them (see ``dlq_claim.lua``)."""
        return self.base + ":replaying"

    @property
    def ids(self) -> str:
        return self.base + ":ids"

    @property
    def signal(self) -> str:
        return self.base + ":signal"

    @property
    def state(self) -> str:
        return self.base + ":state"

    def message(self, message_id: str) -> str:
        return f"{self.base}:m:{message_id}"

    def held(self, consumer_id: str) -> str:
        return f"{self.base}:held:{consumer_id}"


@dataclass(frozen=True)
class GlobalKeys:
    """Names of the keys shared by all queues under one prefix."""

    prefix: str

    @property
    def consumers(self) -> str:
        """Sorted set: consumer id -> last heartbeat (ms)."""
        return f"{self.prefix}{{tq}}:consumers"

    @property
    def queues(self) -> str:
        """Set of every queue name this broker has seen."""
        return f"{self.prefix}{{tq}}:queues"

    @property
    def audit(self) -> str:
        """Stream of operator actions (replay, delete, purge, forget) with actor and reason."""
        return f"{self.prefix}{{tq}}:audit"

    @property
    def offline(self) -> str:
        """Sorted set: consumer id -> when it went offline (ms); its hash stays a while."""
        return f"{self.prefix}{{tq}}:offline"

    def metrics(self, digest: str) -> str:
        """Hash: the history's Prometheus totals of one result store (by a digest of its
        table), with ``:names`` (its labelled task names) and ``:lock`` beside it."""
        return f"{self.prefix}{{tq}}:metrics:{digest}"

    def idempotency(self, digest: str) -> str:
        """String: the task an ``Idempotency-Key`` (by its SHA-256) submitted, while it lasts."""
        return f"{self.prefix}{{tq}}:idempotency:{digest}"

    def sign_in(self, digest: str) -> str:
        """String: the principal of an admin UI sign-in (by the SHA-256 of its session id),
        while the sign-in lasts."""
        return f"{self.prefix}{{tq}}:ui-session:{digest}"

    def consumer(self, consumer_id: str) -> str:
        """Hash describing one consumer: hostname, pid, queues, held, started_at, counts."""
        return f"{self.prefix}{{tq}}:consumer:{consumer_id}"

    def failures(self, hostname: str, pid: int | str) -> str:
        """Counter: tasks that failed in the worker process ``pid`` of node ``hostname``
        (counted by its pool processes, which do not know their consumer's id)."""
        return f"{self.prefix}{{tq}}:failed:{hostname}:{pid}"
