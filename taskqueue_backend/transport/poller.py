"""The event loop's poller: kombu's, and each turn of the loop settles acknowledgements.

A Celery worker acknowledges in its event loop (a task accepted by the pool, or finished when
acks are late). The channel collects those acknowledgements and this poller settles them at
the start of every turn, after kombu has sent the turn's fetches, on which the acknowledgements
of the fetched queue ride: before the loop waits again, every acknowledgement made in the
previous turn is in Redis or on its way there in a fetch.
"""

from __future__ import annotations

from kombu.transport.redis import MultiChannelPoller


class LeasePoller(MultiChannelPoller):
    """kombu's Redis poller, settling each channel's collected acknowledgements per turn."""

    def on_poll_start(self) -> None:
        super().on_poll_start()
        for channel in list(self._channels):
            flush = getattr(channel, "flush_acks", None)
            if flush is not None:
                flush()
