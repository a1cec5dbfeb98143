"""Pipelined publishing: ``Producer.batch()`` on this transport sends a burst in chunks.

kombu 5.7 lets a producer group ``publish`` calls (``with producer.batch(): ...``); this
session buffers the broker's publish scripts and sends them pipelined on one connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kombu.exceptions import KombuError
from redis.exceptions import NoScriptError, ResponseError

if TYPE_CHECKING:
    from .channel import TaskQueueChannel


class BatchPublishError(KombuError):
    """A pipelined burst failed part-way; which of its messages landed is unknown."""


class NotReplicated(KombuError):
    """Published on the primary, but fewer replicas than ``wait_for_replicas`` confirmed it
    within ``wait_for_replicas_timeout``: a failover now could lose it. Not retried (a retry
    would publish it twice); the caller decides."""


def wait_command(channel: TaskQueueChannel) -> tuple[Any, ...] | None:
    """The ``WAIT`` that ``wait_for_replicas`` asks for after a publish, or None (WAIT counts
    the writes of its own connection, so it goes on the connection that wrote)."""
    wanted = channel.options.wait_for_replicas
    return ("WAIT", wanted, _wait_ms(channel)) if wanted else None


def ask_replicas(channel: TaskQueueChannel, pipeline: Any) -> bool:
    """Queue ``WAIT`` on ``pipeline`` after its writes when ``wait_for_replicas`` asks for it."""
    wait = wait_command(channel)
    if wait is not None:
        pipeline.execute_command(*wait)
    return wait is not None


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
    """Buffers publish scripts (and fanout PUBLISH commands) and sends them ``max_size`` at a
    time on one connection of the channel's pool.

    A full chunk is sent without waiting for its replies, which are read before the next
    chunk is sent: Redis runs one chunk while the producer builds the next. ``flush`` sends
    the rest and reads every reply, so when the batch's context ends every message is stored
    (or the error says the delivery is uncertain), as with a pipeline executed at once.
    """

    def __init__(self, channel: TaskQueueChannel, max_size: int) -> None:
        self.channel = channel
        self.max_size = max_size
        self._buffered = 0
        self._closed = False
        self._commands: list[tuple[Any, ...]] = []
        self._unread: list[tuple[Any, ...]] = []  # sent, replies not read yet
        self._connection: Any = None
        self._scripts_checked = False

    def publish(self, message: dict[str, Any], **kwargs: Any) -> Any:
        if self._closed:
            raise RuntimeError("publish batch is closed")
        return self.channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add_script(self, name: str, keys: list[str], args: list[Any]) -> None:
        sha = self.channel.scripts.sha(name)
        self._commands.append(("EVALSHA", sha, len(keys), *keys, *args))
        self._count()

    def add(self, name: str, *args: Any) -> None:
        """A plain command queued by kombu (fanout PUBLISH); prefixed as kombu would."""
        if name == "publish":
            args = (self.channel.global_keyprefix + str(args[0]), *args[1:])
        self._commands.append((name.upper(), *args))
        self._count()

    def _count(self) -> None:
        self._buffered += 1
        if self._buffered >= self.max_size:
            self._full()

    def _full(self) -> None:
        self._sending(wait=False)

    def flush(self) -> None:
        self._sending(wait=True)
        self._release()

    def _sending(self, wait: bool) -> None:
        """Read the last chunk's replies and send the buffered one (``wait``: and read its
        replies too); any failure gives the batch up, saying the delivery is uncertain."""
        try:
            self._read_unread()
            self._send_chunk()
            if wait:
                self._read_unread()
        except (BatchPublishError, NotReplicated):
            self._give_up()
            raise
        except Exception as exc:
            self._give_up()
            raise BatchPublishError("publish batch failed; delivery is uncertain") from exc

    def _send_chunk(self) -> None:
        commands, self._commands = self._commands, []
        self._buffered = 0
        if not commands:
            return
        if not self._scripts_checked:
            self.channel.scripts.ensure_loaded()  # one check per batch, not per chunk
            self._scripts_checked = True
        wait = wait_command(self.channel)
        if wait is not None:
            commands.append(wait)
        if self._connection is None:
            self._connection = self.channel.redis.connection_pool.get_connection()
        self._connection.send_packed_command(self._connection.pack_commands(commands))
        self._unread = commands

    def _read_unread(self) -> None:
        sent, self._unread = self._unread, []
        if not sent:
            return
        again, failed = [], None
        for command in sent:
            try:
                reply = self._connection.read_response()
            except ResponseError as exc:
                if isinstance(exc, NoScriptError):
                    again.append(command)  # not run: the scripts were flushed meanwhile
                elif failed is None:
                    failed = exc
                continue
            if command[0] == "WAIT":
                check_replicas(self.channel, reply)
        if failed is not None:
            raise BatchPublishError("publish batch failed; delivery is uncertain") from failed
        if again:
            self.channel.scripts.load_all()
            self._connection.send_packed_command(self._connection.pack_commands(again))
            self._unread = again
            self._read_unread()

    def _give_up(self) -> None:
        self._commands, self._unread, self._buffered = [], [], 0
        if self._connection is not None:
            self._connection.disconnect()  # replies may be pending: never reuse it
        self._release()

    def _release(self) -> None:
        if self._connection is not None:
            self.channel.redis.connection_pool.release(self._connection)
            self._connection = None

    def discard(self) -> None:
        """Drop what was not sent; what was sent ran (its replies are read and dropped)."""
        self._commands, self._buffered = [], 0
        try:
            self._read_unread()
        except Exception:  # noqa: BLE001 - aborting anyway: the caller's error is the news
            self._give_up()
            return
        self._release()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.discard()
