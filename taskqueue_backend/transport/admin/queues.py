"""The queues' data in Redis: the registry of known queues, each queue's counts
(``stats.lua``), its messages' hashes and task-id index, its delayed set, and the scripts that
remove, pause, resume and purge (``remove``, ``pause``, ``resume``, ``purge``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .. import fields, scheduled, stats
from ..replies import as_text
from .base import AdminData


class QueueData(AdminData):
    """A part of ``BrokerAdmin``."""

    def queue_names(self) -> list[str]:
        """Queues that hold anything (one that expired or was deleted is left out)."""
        return stats.known_queues(self.client, self.prefix)

    def counts(self, queue: str) -> stats.QueueCounts:
        return stats.read_counts(self.client, self.scripts, self.prefix, self.options, queue)

    def consumers(self, queues: Sequence[str]) -> dict[str, int]:
        """Live consumers per queue."""
        return stats.consumers_per_queue(self.client, self.prefix, self.options, list(queues))

    def message(self, queue: str, message_id: str) -> fields.StoredMessage | None:
        return self.records([(queue, message_id)])[0]

    def message_ids_of(self, queues: Sequence[str], task_id: str) -> list[str | None]:
        """Per queue, the id of the task's message there (the task-id index), or None."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.hget(self._queue(queue).ids, task_id)
        return [as_text(found) for found in pipe.execute()]

    def task_messages(self, task_id: str) -> list[fields.StoredMessage]:
        """The task's messages in every known queue, by each queue's task-id index (a queue
        that expired has no index: nothing found there). One round trip when none is found:
        the list of queues is read in the same pipeline as the index of each queue it held
        the time before; only a queue listed since then costs a second one."""
        names, ids = self._task_ids_in_listed(task_id)
        held = [(q, m) for q, m in zip(names, ids, strict=True) if m is not None]
        return [m for m in self.records(held) if m is not None] if held else []

    def _task_ids_in_listed(self, task_id: str) -> tuple[list[str], list[str | None]]:
        guessed = self.listed_before
        pipe = self.client.pipeline(transaction=False)
        pipe.smembers(self._global.queues)
        for queue in guessed:
            pipe.hget(self._queue(queue).ids, task_id)
        listed, *found = pipe.execute()
        names = stats.queue_names(listed)
        ids = dict(zip(guessed, (as_text(f) for f in found), strict=True))
        new = [q for q in names if q not in ids]
        if new:
            ids.update(zip(new, self.message_ids_of(new, task_id), strict=True))
        self.listed_before = names
        return names, [ids[q] for q in names]

    def task_ids_like(self, queue: str, pattern: str) -> Iterator[str]:
        """The task ids in the queue's task-id index that match a glob ``pattern``."""
        key = self._queue(queue).ids
        for task_id, _ in self.client.hscan_iter(key, match=pattern, count=1000):
            yield as_text(task_id) or ""

    def delayed(self, queue: str, limit: int) -> list[fields.StoredMessage]:
        """The queue's delayed messages, soonest first."""
        return scheduled.delayed_messages(self.client, self.prefix, queue, limit)

    def remove_waiting(self, queue: str, task_id: str) -> str:
        """Delete the task's message if it waits (``remove.lua``): ``removed``, or where it
        is instead (``inflight``, ``dead``), or ``missing``."""
        keys = self._queue(queue)
        state, _owner = self.scripts["remove"](
            keys=[keys.ready, keys.delayed, keys.dead, keys.ids], args=[keys.base, task_id],
            client=self.client,
        )  # fmt: skip
        return as_text(state) or ""

    def pause(self, queue: str, now: int, actor: str, reason: str) -> bool:
        """Stop consumers leasing from ``queue`` (``pause.lua``); False if it was paused.

        A queue nobody has used yet can be paused ahead of its first message: it is listed
        first (the list lives in another hash slot than the queue)."""
        keys = self._queue(queue)
        self.client.sadd(self._global.queues, queue)
        return bool(self.scripts["pause"](
            keys=[keys.state], args=[now, actor, reason], client=self.client,
        ))  # fmt: skip

    def resume(self, queue: str) -> bool:
        """Let consumers lease from ``queue`` again, waking them (``resume.lua``)."""
        keys = self._queue(queue)
        return bool(self.scripts["resume"](
            keys=[keys.ready, keys.delayed, keys.signal, keys.state], args=[keys.base],
            client=self.client,
        ))  # fmt: skip

    def purge(self, queue: str, include_delayed: bool) -> int:
        """Delete the queue's waiting messages; how many went."""
        from ..channel import purge_waiting

        return purge_waiting(self.scripts, self.client, self._queue(queue),
                             include_delayed)  # fmt: skip
