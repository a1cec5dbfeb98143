"""What every part of ``BrokerAdmin`` works on: one Redis database's client, the transport's
scripts, the ``global_keyprefix`` and the broker options, the key names under it, and the
stored messages every part reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import fields
from ..keys import GlobalKeys, QueueKeys

if TYPE_CHECKING:
    from redis import Redis

    from ..options import BrokerOptions
    from ..scripts import Scripts


class AdminData:
    """The base of the parts mixed into ``BrokerAdmin`` (a dataclass with these fields)."""

    client: Redis
    scripts: Scripts
    prefix: str
    options: BrokerOptions
    #: the list of queues as the last task lookup read it (``QueueData.task_messages``)
    listed_before: list[str]

    @property
    def cluster(self) -> bool:
        """Whether the client reaches a Redis Cluster (one hash slot per queue)."""
        from redis.cluster import RedisCluster

        return isinstance(self.client, RedisCluster)

    def _queue(self, queue: str) -> QueueKeys:
        return QueueKeys(self.prefix, queue)

    @property
    def _global(self) -> GlobalKeys:
        return GlobalKeys(self.prefix)

    def records(self, wanted: Sequence[tuple[str, str]]) -> list[fields.StoredMessage | None]:
        """The stored message of each (queue, message id); None where it is gone."""
        pipe = self.client.pipeline(transaction=False)
        for queue, message_id in wanted:
            pipe.hmget(self._queue(queue).message(message_id), fields.RECORD_FIELDS)
        replies = zip(wanted, pipe.execute(), strict=True)
        return [fields.read_record(queue, message_id, values)
                for (queue, message_id), values in replies]  # fmt: skip
