"""Transport options (``broker_transport_options``) with their defaults and checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

PRIORITY_ORDERS = ("redis", "amqp")
MAX_PRIORITY_LIMIT = 255


class InvalidPriority(ValueError):
    """A message was published with a priority outside the configured range."""


@dataclass(frozen=True)
class BrokerOptions:
    """What a Celery app can tune through ``broker_transport_options``.

    ``priority_order="redis"`` (kombu's Redis order) runs lower numbers first;
    ``"amqp"`` runs higher numbers first, as RabbitMQ does.

    Dead letters are kept until an operator acts on them unless ``dead_letter_max_count``
    (per queue) or ``dead_letter_max_age`` (seconds) is set (0 = no limit); every entry the
    retention removes is counted, logged and exported.
    """

    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    max_redeliveries: int = 5
    priority_order: str = "redis"
    max_priority: int = 9
    default_priority: int = 0
    fetch_limit: int = 100
    release_limit: int = 1000
    dead_letter_max_count: int = 0
    dead_letter_max_age: float = 0.0
    #: publishing waits until this many replicas hold the message (Redis ``WAIT``), so a
    #: failover to one of them cannot lose it; 0: no wait (Redis's asynchronous replication)
    wait_for_replicas: int = 0
    #: seconds a publish waits for them; fewer within it is ``NotReplicated``
    wait_for_replicas_timeout: float = 1.0

    @classmethod
    def from_transport_options(cls, options: Mapping[str, Any]) -> BrokerOptions:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in options.items() if k in known}
        try:
            made = cls(**values)
        except TypeError as exc:  # pragma: no cover - dataclass signature
            raise ValueError(f"invalid broker_transport_options: {exc}") from None
        made.validate()
        return made

    def validate(self) -> None:
        if self.priority_order not in PRIORITY_ORDERS:
            raise ValueError(
                f"priority_order must be one of {PRIORITY_ORDERS}, got {self.priority_order!r}"
            )
        if not (isinstance(self.max_priority, int) and 0 < self.max_priority <= MAX_PRIORITY_LIMIT):
            raise ValueError(
                f"max_priority must be an integer from 1 to {MAX_PRIORITY_LIMIT}, "
                f"got {self.max_priority!r}"
            )
        if self.default_priority != 0:
            # kombu turns "no priority" into 0 before the transport sees it, so a transport
            # default would also rewrite an explicit priority=0.
            raise ValueError(
                "default_priority is not a transport option: set Celery's "
                "task_default_priority (or a task's priority) instead"
            )
        if self.heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be > 0, got {self.heartbeat_interval!r}")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError(
                "heartbeat_timeout must be longer than heartbeat_interval "
                f"(got timeout={self.heartbeat_timeout!r}, interval={self.heartbeat_interval!r})"
            )
        if self.max_redeliveries < 0:
            raise ValueError(f"max_redeliveries must be >= 0, got {self.max_redeliveries!r}")
        if self.dead_letter_max_count < 0 or self.dead_letter_max_age < 0:
            raise ValueError("dead_letter_max_count and dead_letter_max_age must be >= 0")
        if self.fetch_limit < 1 or self.release_limit < 1:
            raise ValueError("fetch_limit and release_limit must be >= 1")
        if self.wait_for_replicas < 0 or self.wait_for_replicas_timeout <= 0:
            raise ValueError("wait_for_replicas must be >= 0 and wait_for_replicas_timeout > 0")

    def rank(self, priority: Any) -> int:
        """Position class of a priority: rank 0 is served first.

        ``None`` means the default priority. Anything that is not an integer within
        ``0..max_priority`` raises :class:`InvalidPriority` (never a silent clamp).
        """
        if priority is None:
            priority = self.default_priority
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidPriority(
                f"priority must be an integer from 0 to {self.max_priority}, got {priority!r}"
            )
        if not 0 <= priority <= self.max_priority:
            raise InvalidPriority(
                f"priority {priority} is outside 0..{self.max_priority} "
                f"(raise max_priority in broker_transport_options, up to {MAX_PRIORITY_LIMIT})"
            )
        return priority if self.priority_order == "redis" else self.max_priority - priority

    def priority_of(self, rank: int) -> int:
        return rank if self.priority_order == "redis" else self.max_priority - rank
