"""The worker registry's data in Redis: live consumers scored by their last beat, offline ones
by when they went, each consumer's hash, failure counters per process, and the recovery of a
stale consumer's leases (``transport.recovery``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from .. import recovery
from ..replies import as_int, as_text
from .base import AdminData

#: (consumer id, score: last beat or offline time in ms, its hash with text keys)
Registered = tuple[str, float, dict[str, Any]]


class RegistryData(AdminData):
    """A part of ``BrokerAdmin``."""

    def registered(self, live: bool, offline: bool) -> tuple[list[Registered], list[Registered]]:
        """The live consumers (newest beat first) and the offline ones (newest first), each
        with its hash; offline entries past their keeping are pruned first, and one whose
        hash expired meanwhile is left out."""
        keys = self._global
        recovery.prune_offline(self.client, self.prefix)
        Scored = list[tuple[bytes, float]]
        found: list[tuple[str, float, bool]] = []
        if live:
            scored = cast(Scored, self.client.zrevrange(keys.consumers, 0, -1, withscores=True))
            found += [(as_text(c) or "", score, False) for c, score in scored]
        if offline:
            scored = cast(Scored, self.client.zrevrange(keys.offline, 0, -1, withscores=True))
            found += [(as_text(c) or "", score, True) for c, score in scored]
        pipe = self.client.pipeline(transaction=False)
        for consumer_id, _, _ in found:
            pipe.hgetall(keys.consumer(consumer_id))
        alive: list[Registered] = []
        gone: list[Registered] = []
        for (consumer_id, score, is_offline), raw in zip(found, pipe.execute(), strict=True):
            fields = {as_text(k) or "": v for k, v in raw.items()}
            if not is_offline:
                alive.append((consumer_id, score, fields))
            elif fields:
                gone.append((consumer_id, score, fields))
        return alive, gone

    def failures(self, processes: Sequence[tuple[str, int]]) -> list[int]:
        """The failed-task count of each (node name, pid)."""
        keys = self._global
        pipe = self.client.pipeline(transaction=False)
        for hostname, pid in processes:
            pipe.get(keys.failures(hostname, pid))
        return [as_int(count) or 0 for count in pipe.execute()]

    def forget(self, consumers: Sequence[tuple[str, str, int]], keep_counts: set[tuple[str, int]]
               ) -> None:  # fmt: skip
        """Remove offline consumers (consumer id, node name, pid) from the registry, and their
        failure counts unless a running process has the same node name and pid."""
        keys = self._global
        pipe = self.client.pipeline(transaction=True)
        for consumer_id, hostname, pid in consumers:
            pipe.zrem(keys.offline, consumer_id)
            pipe.delete(keys.consumer(consumer_id))
            if (hostname, pid) not in keep_counts:  # a restart may reuse name and pid
                pipe.delete(keys.failures(hostname, pid))
        pipe.execute()

    def recover(self, consumer_id: str, actor: str, notify: Callable[..., Any]) -> Any:
        """Return a stale consumer's leased messages to their queues now."""
        return recovery.recover_consumer(self.client, self.scripts, self.prefix, consumer_id,
                                         self.options, actor, notify)  # fmt: skip

    def recover_every_stale(self, actor: str, notify: Callable[..., Any]) -> list[Any]:
        """Return the leased messages of every stale consumer now."""
        return recovery.reap_stale(self.client, self.scripts, self.prefix, self.options, actor,
                                   notify=notify)  # fmt: skip
