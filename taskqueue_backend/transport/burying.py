"""Dead-lettering on the channel: a leased message, a failed task's copy or rebuilt message
(and putting a rebuilt message back in its queue, for a task that did not run).

Mixed into the channel (``channel.TaskQueueChannel``), whose scripts, leases and keys it
uses. Every entry is one Lua script; listeners (the result backend's history) hear of it.

Each dead letter is logged once, with the reason it is kept under. Celery rejects the message
of an unknown task or an invalid one first and says why right after (``hooks``:
``task_unknown``, ``task_rejected``), in the same turn of the worker's event loop; so a
rejection's line waits for the end of that turn, and names the reason Celery reported.
"""

from __future__ import annotations

import logging
import socket
from collections import OrderedDict
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from kombu.utils.json import dumps
from redis import Redis

from .. import lifecycle, worker_info
from ..clock import now_ms
from ..vocabulary import DeadLetterReason
from .keys import QueueKeys
from .messages import publish_fields

logger = logging.getLogger(__name__)


def _failure_args(info: dict[str, Any]) -> list[str]:
    """reason, detail, worker, exc_type, exc_message, traceback: the tail of the ARGV of
    ``bury_rebuilt.lua`` and ``bury_copy.lua``."""
    return [info.get("reason") or DeadLetterReason.FAILED, info.get("detail") or "",
            info.get("worker") or "", info.get("exc_type") or "", info.get("exc_message") or "",
            info.get("traceback") or ""]  # fmt: skip


class DeadLetterMixin:
    """The channel's dead-letter operations."""

    _recent_dead: OrderedDict[str, tuple[str, str]]
    #: delivery tag -> (queue, message id, detail) of a rejection whose line waits for the
    #: reason Celery reports
    _held_lines: dict[str, tuple[str, str, str]] | None = None
    consumer_id: str

    if TYPE_CHECKING:  # provided by the channel
        options: Any
        connection: Any
        body_encoding: str

        def encode_body(self, body: Any, encoding: str | None = None) -> tuple[Any, str]: ...

        def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None: ...

        @property
        def redis(self) -> Redis: ...

        @property
        def scripts(self) -> Any: ...

        def queue_keys(self, queue: str) -> QueueKeys: ...

        def _lease(self, delivery_tag: str) -> tuple[QueueKeys, str] | None: ...

        def _maybe_retire(self) -> None: ...

        def _remember_queue(self, queue: str) -> None: ...

        def _emit(
            self, event: str, delivery_tag: str, queue: str, detail: dict[str, Any]
        ) -> None: ...

    def bury_rebuilt(self, queue: str, envelope: dict[str, Any], info: dict[str, Any]) -> None:
        """Store a failed task's rebuilt message as a dead letter (see ``failures``)."""
        message = dict(envelope)
        properties = message["properties"] = dict(message["properties"])
        message["body"], properties["body_encoding"] = self.encode_body(
            message["body"], self.body_encoding
        )
        fields = publish_fields(message, self.options)
        keys = self.queue_keys(queue)
        published = info.get("published_at")
        self.scripts["bury_rebuilt"](
            keys=[keys.dead, keys.ids],
            args=[keys.base, uuid4().hex, dumps(message), fields["rank"], fields["task_id"],
                  fields["priority"], fields["now"], int(info.get("deliveries") or 1),
                  int(published) if published else "", int(info.get("replays") or 0),
                  *_failure_args(info)],
            client=self.redis,
        )  # fmt: skip
        self._remember_queue(queue)
        self._announce_failed(queue, fields["task_id"], info)

    def put_back_rebuilt(self, queue: str, envelope: dict[str, Any]) -> None:
        """Publish a task's rebuilt message to its queue again (``unrecorded_tasks``): it was
        acknowledged on start, then did not run."""
        message = dict(envelope)
        properties = message["properties"] = dict(message["properties"])
        message["body"], properties["body_encoding"] = self.encode_body(
            message["body"], self.body_encoding
        )
        self._put(queue, message)

    def bury_copy(self, queue: str, message_id: str, info: dict[str, Any]) -> bool:
        """Keep a byte-for-byte copy of a leased message as a dead letter (see ``failures``)."""
        keys = self.queue_keys(queue)
        copied = self.scripts["bury_copy"](
            keys=[keys.dead, keys.ids],
            args=[keys.base, message_id, uuid4().hex, now_ms(), *_failure_args(info)],
            client=self.redis,
        )  # fmt: skip
        if copied:
            self._announce_failed(queue, info.get("task_id") or "", info)
        return bool(copied)

    def _announce_failed(self, queue: str, task_id: str, info: dict[str, Any]) -> None:
        detail = {
            "reason": info.get("reason") or DeadLetterReason.FAILED,
            "detail": info.get("detail") or "",
        }
        worker = info.get("worker") or worker_info.WORKER_NODENAME
        lifecycle.emit(
            lifecycle.MessageEvent(lifecycle.DEAD_LETTERED, task_id, queue, detail, worker)
        )
        if detail["reason"] == DeadLetterReason.FAILED:
            logger.warning("task %s failed for good; kept in the dead letters of queue %r: %s",
                           task_id, queue, detail["detail"])  # fmt: skip
        else:
            logger.warning("task %s kept in the dead letters of queue %r (%s): %s",
                           task_id, queue, detail["reason"], detail["detail"])  # fmt: skip

    def dead_letter(self, delivery_tag: str, reason: str, detail: str) -> None:
        lease = self._lease(delivery_tag)
        if lease is None:
            return
        keys, message_id = lease
        moved = self.scripts["dead_letter"](
            keys=[keys.inflight, keys.dead],
            args=[
                keys.base,
                message_id,
                self.consumer_id,
                reason,
                detail,
                now_ms(),
                worker_info.WORKER_NODENAME or socket.gethostname(),
            ],  # fmt: skip
            client=self.redis,
        )
        if moved:
            self._emit(
                lifecycle.DEAD_LETTERED,
                delivery_tag,
                keys.queue,
                {"reason": reason, "detail": detail},
            )
            self._recent_dead[delivery_tag] = (keys.queue, message_id)
            while len(self._recent_dead) > 1000:
                self._recent_dead.popitem(last=False)
            held = (keys.queue, message_id, detail)
            if reason != DeadLetterReason.REJECTED or not self._hold_line(delivery_tag, held):
                _log_dead_letter(message_id, keys.queue, reason, detail)
        self._maybe_retire()

    def _hold_line(self, delivery_tag: str, line: tuple[str, str, str]) -> bool:
        """Log a rejection at the end of this turn of the worker's event loop, once Celery
        has said why it rejected (False outside an event loop: log it now)."""
        from kombu.asynchronous import get_event_loop

        hub = get_event_loop()
        if hub is None or not getattr(self.connection, "in_event_loop", False):
            return False
        if self._held_lines is None:
            self._held_lines = {}
        self._held_lines[delivery_tag] = line
        # on_tick runs once per turn, after the deferred acks and rejects (call_soon) and
        # before the next poll; a rejection made while receiving (in a readable callback) is
        # reported in that callback, before the next turn
        hub.on_tick.add(self._log_held_lines)
        return True

    def _log_held_lines(self) -> None:
        """The end of the turn: the rejections no reason came for are kept as rejected."""
        from kombu.asynchronous import get_event_loop

        hub = get_event_loop()
        if hub is not None:
            hub.on_tick.discard(self._log_held_lines)
        while self._held_lines:
            _tag, (queue, message_id, detail) = self._held_lines.popitem()
            _log_dead_letter(message_id, queue, DeadLetterReason.REJECTED, detail)

    def annotate_dead_letter(self, delivery_tag: str, reason: str, detail: str) -> None:
        """Replace the generic 'rejected' reason with the one Celery reported afterwards."""
        found = self._recent_dead.pop(delivery_tag, None)
        if found is None:
            return
        queue, message_id = found
        keys = self.queue_keys(queue)
        annotated = self.scripts["annotate"](
            keys=[keys.dead], args=[keys.base, message_id, reason, detail], client=self.redis
        )
        held = self._held_lines.pop(delivery_tag, None) if self._held_lines else None
        if held is not None:
            if annotated:
                _log_dead_letter(message_id, queue, reason, detail)
            else:  # replayed or deleted meanwhile: it was kept as rejected
                _log_dead_letter(message_id, queue, DeadLetterReason.REJECTED, held[2])
        elif annotated:  # its rejection was logged at once (no event loop to wait for)
            logger.warning("message %s from queue %r: its dead letter is kept as %s (%s), the "
                           "reason Celery reported after rejecting it", message_id, queue,
                           reason, detail)  # fmt: skip


def _log_dead_letter(message_id: str, queue: str, reason: str, detail: str) -> None:
    logger.warning("message %s from queue %r dead-lettered: %s (%s)", message_id, queue, reason,
                   detail)  # fmt: skip
