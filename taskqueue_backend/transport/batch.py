"""Pipelined publishing: ``Producer.batch()`` on this transport sends one round trip per burst.

kombu 5.7 lets a producer group ``publish`` calls (``with producer.batch(): ...``); this
session buffers the broker's publish scripts in one non-transactional pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kombu.exceptions import KombuError

if TYPE_CHECKING:
    from .channel import TaskQueueChannel


class BatchPublishError(KombuError):
    """A pipelined burst failed part-way; which of its messages landed is unknown."""


class NotReplicated(KombuError):
    """Published on the primary, but fewer replicas than ``wait_for_replicas`` confirmed it
    within ``wait_for_replicas_timeout``: a failover now could lose it. Not retried (a retry
    would publish it twice); the caller decides."""


def ask_replicas(channel: TaskQueueChannel, pipeline: Any) -> bool:
    """Queue ``WAIT`` on ``pipeline`` after its writes when ``wait_for_replicas`` asks for
    it (WAIT counts the writes of its own connection, so it goes in the same pipeline)."""
    wanted = channel.options.wait_for_replicas
    if wanted:
        pipeline.execute_command("WAIT", wanted, _wait_ms(channel))
    return bool(wanted)


def check_replicas(channel: TaskQueueChannel, acked: Any) -> None:
    """Raise ``NotReplicated`` when ``WAIT``'s reply is fewer replicas than asked for."""
    wanted = channel.options.wait_for_replicas
    if int(acked) < wanted:
        raise NotReplicated(
            f"published, but {int(acked)} of the {wanted} replica(s) asked for "
            f"(wait_for_replicas) confirmed it within {_wait_ms(channel)} ms"
        )


def _wait_ms(channel: TaskQueueChannel) -> int:
    return max(1, int(channel.options.wait_for_replicas_timeout * 1000))


class ScriptBatch:
    """Buffers publish scripts (and fanout PUBLISH commands) until ``flush``."""

    def __init__(self, channel: TaskQueueChannel, max_size: int) -> None:
        self.channel = channel
        self.max_size = max_size
        self.pipeline = channel.redis.pipeline(transaction=False)
        self._buffered = 0
        self._closed = False

    def publish(self, message: dict[str, Any], **kwargs: Any) -> Any:
        if self._closed:
            raise RuntimeError("publish batch is closed")
        return self.channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add_script(self, name: str, keys: list[str], args: list[Any]) -> None:
        self.channel.scripts[name](keys=keys, args=args, client=self.pipeline)
        self._count()

    def add(self, name: str, *args: Any) -> None:
        """A plain command queued by kombu (fanout PUBLISH); prefixed as kombu would."""
        if name == "publish":
            args = (self.channel.global_keyprefix + str(args[0]), *args[1:])
        getattr(self.pipeline, name)(*args)
        self._count()

    def _count(self) -> None:
        self._buffered += 1
        if self._buffered >= self.max_size:
            self.flush()

    def flush(self) -> None:
        if not self._buffered:
            return
        waits = ask_replicas(self.channel, self.pipeline)
        try:
            replies = self.pipeline.execute()
        except Exception as exc:
            self.pipeline.reset()
            raise BatchPublishError("publish batch failed; delivery is uncertain") from exc
        finally:
            self._buffered = 0
        if waits:
            check_replicas(self.channel, replies[-1])

    def discard(self) -> None:
        self._buffered = 0
        self.pipeline.reset()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.pipeline.reset()
