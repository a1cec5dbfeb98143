"""The one owner of the broker's data model for everything but the transport's own moves.

The operations layer (and through it the CLI, the API and the UI) reads and changes dead
letters, queues, the worker registry and the audit stream only through ``BrokerAdmin``: it
alone, with the transport, knows the keys (``keys``), the message fields (``fields``) and the
scripts (``lua/``). A change of key layout — a hash tag per queue for Redis Cluster, say — is
made here and in the transport, and nowhere else (a code-quality test checks that the
operations layer touches no Redis client, key, field or script itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis import Redis

from ..fields import StoredMessage
from ..options import BrokerOptions
from ..scripts import Scripts
from ..stats import QueueCounts
from .bookkeeping import AuditRecord, BookkeepingData
from .dead_letters import DeadLetterData
from .queues import QueueData
from .registry import RegistryData

__all__ = ["AuditRecord", "BrokerAdmin", "QueueCounts", "StoredMessage"]


@dataclass
class BrokerAdmin(DeadLetterData, QueueData, RegistryData, BookkeepingData):
    """The broker's data under one ``global_keyprefix`` of one Redis database."""

    client: Redis
    scripts: Scripts
    prefix: str
    options: BrokerOptions
    listed_before: list[str] = field(default_factory=list, init=False, repr=False)
