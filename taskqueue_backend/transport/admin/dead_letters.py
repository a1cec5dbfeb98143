"""The dead letters' data in Redis: each queue's dead set (``tq:{q}:dead``, scored by the time
a message died) and replaying set, the messages' hashes, and the scripts that move entries
(``dlq_claim``, ``dlq_release``, ``dlq_delete``). The operations layer's ``DeadLetters`` calls
these and never the keys or scripts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

from .. import fields, retention
from ..replies import as_int, as_text
from .base import AdminData


class DeadLetterData(AdminData):
    """A part of ``BrokerAdmin``."""

    def dead_newest_first(
        self, queue: str, high: int | str, low: int | str, offset: int, count: int
    ) -> list[tuple[int, str]]:
        """(dead_at ms, message id) of up to ``count`` entries scored ``low``..``high``,
        newest first, from the ``offset``-th on."""
        key = self._queue(queue).dead
        members = cast(list[tuple[bytes, float]], self.client.zrevrangebyscore(
            key, high, low, start=offset, num=count, withscores=True))  # fmt: skip
        return [(int(score), as_text(member) or "") for member, score in members]

    def dead_ids_like(self, queue: str, pattern: str) -> Iterator[str]:
        """The message ids in the queue's dead set that match a glob ``pattern``."""
        for member, _score in self.client.zscan_iter(self._queue(queue).dead, match=pattern,
                                                     count=1000):  # fmt: skip
            yield as_text(member) or ""

    def locate_dead(self, queues: Sequence[str], ident: str) -> tuple[str, str, int] | None:
        """(queue, message id, dead_at ms) of the entry whose message or task id is ``ident``."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.hget(self._queue(queue).ids, ident)
        message_ids = [as_text(found) or ident for found in pipe.execute()]
        for queue, message_id in zip(queues, message_ids, strict=True):
            pipe.zscore(self._queue(queue).dead, message_id)
        for queue, message_id, score in zip(queues, message_ids, pipe.execute(), strict=True):
            if score is not None:
                return queue, message_id, int(score)
        return None

    def dead_counts(self, queues: Sequence[str]) -> list[tuple[int, float | None, int, int]]:
        """Per queue: (entries, oldest dead_at ms or None, entries trimmed by retention,
        entries being replayed)."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            keys = self._queue(queue)
            pipe.zcard(keys.dead)
            pipe.zrange(keys.dead, 0, 0, withscores=True)
            pipe.hget(keys.state, "dead_trimmed")
            pipe.zcard(keys.replaying)
        replies = pipe.execute()
        counts = []
        for i in range(len(queues)):
            dead, first, trimmed, replaying = replies[4 * i : 4 * i + 4]
            oldest = float(first[0][1]) if first else None
            counts.append((int(dead or 0), oldest, as_int(trimmed) or 0, int(replaying or 0)))
        return counts

    def dead_trimmed(self, queues: Sequence[str]) -> list[int]:
        """Per queue, how many dead letters retention has trimmed."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.hget(self._queue(queue).state, "dead_trimmed")
        return [as_int(n) or 0 for n in pipe.execute()]

    def claim_dead(self, queue: str, message_ids: Sequence[str], now: int, stale_ms: int) -> Any:
        """Claim entries for a replay (``dlq_claim.lua``): the (message id, task id) pairs
        claimed, flat as the script returns them."""
        keys = self._queue(queue)
        return self.scripts["dlq_claim"](
            keys=[keys.dead, keys.replaying], args=[keys.base, now, stale_ms, *message_ids],
            client=self.client,
        )  # fmt: skip

    def release_dead(self, queue: str, target: str, now: int, releases: Sequence[Any]) -> None:
        """Put claimed entries on ``target``'s ready set (``dlq_release.lua``); ``releases``
        holds (message id, new body or '', new expiry or '') triples, flat.

        On Redis Cluster another queue's keys live in another slot: each entry is copied
        there first (``dlq_take_in.lua``) and the original removed after
        (``dlq_hand_over.lua``), so an interruption between the two keeps it twice, never
        loses it (the original returns to its dead letters when the claim goes stale)."""
        keys, to = self._queue(queue), self._queue(target)
        if target != queue and self.cluster:
            for i in range(0, len(releases), 3):
                message_id, body, expire_at = releases[i : i + 3]
                stored = cast(dict[bytes, bytes], self.client.hgetall(keys.message(message_id)))
                flat = [item for pair in stored.items() for item in pair]
                self.scripts["dlq_take_in"](
                    keys=[to.ready, to.signal, to.state, to.ids],
                    args=[to.base, now, keys.base, message_id, body, expire_at, *flat],
                    client=self.client,
                )  # fmt: skip
                self.scripts["dlq_hand_over"](
                    keys=[keys.replaying], args=[keys.base, message_id], client=self.client
                )
            return
        self.scripts["dlq_release"](
            keys=[keys.replaying, to.ready, to.signal, to.state, to.ids],
            args=[keys.base, to.base, now, *releases], client=self.client,
        )  # fmt: skip

    def bodies(self, queue: str, message_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored body (the envelope) of each message that still has one."""
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.hget(self._queue(queue).message(message_id), fields.BODY)
        found = zip(message_ids, pipe.execute(), strict=True)
        return {m: body for m, body in found if body is not None}

    def delete_dead(self, queue: str, message_ids: Sequence[str]) -> Any:
        """Delete entries for good (``dlq_delete.lua``): the (message id, task id) pairs
        deleted, flat."""
        keys = self._queue(queue)
        return self.scripts["dlq_delete"](keys=[keys.dead], args=[keys.base, *message_ids],
                                          client=self.client)  # fmt: skip

    def trim_dead(self, queue: str) -> int:
        """Apply the configured dead-letter retention to one queue; how many went."""
        return retention.trim_queue(self.client, self.scripts, self.prefix, self.options, queue)

    def note_queue(self, queue: str) -> None:
        """Add a queue to the registry of known queues (a replay to a new queue)."""
        self.client.sadd(self._global.queues, queue)
