"""Acknowledgement state of a consuming channel, backed by leases in Redis.

Unlike kombu's Redis QoS there is no visibility timeout: a delivered message stays
leased to this channel's consumer id for as long as the consumer heartbeats.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import virtual

from ..vocabulary import DeadLetterReason


class LeaseQoS(virtual.QoS):
    """Ack, reject and restore through the channel's Lua scripts."""

    restore_at_shutdown = True

    def ack(self, delivery_tag: str) -> None:
        message = self._delivered.get(delivery_tag)  # type: ignore[attr-defined]
        decode_error = getattr(message, "tq_decode_error", None)
        if decode_error is not None:
            # Celery acks what it cannot decode; keep it as a dead letter instead.
            self.channel.dead_letter(
                delivery_tag,
                DeadLetterReason.UNDECODABLE,
                f"{type(decode_error).__name__}: {decode_error}",
            )
        else:
            self.channel.ack_lease(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self.channel.requeue_lease(delivery_tag, rejected=True)
        else:
            self.channel.dead_letter(
                delivery_tag, DeadLetterReason.REJECTED, "rejected without requeue"
            )
        super().ack(delivery_tag)

    def restore_unacked(self) -> list[Any]:
        self._flush()
        errors: list[Any] = []
        while self._delivered:
            tag, message = self._delivered.popitem()
            try:
                self.channel.requeue_lease(tag)
            except self.channel.connection_errors:
                # The lease is still in Redis: the message returns to its queue when this
                # consumer's heartbeats stop (the channel logs that). Nothing to dump.
                self._delivered.clear()
                break
            except Exception as exc:
                errors.append((exc, message))
        return errors

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: leases end by acknowledgement or by their consumer's death."""
