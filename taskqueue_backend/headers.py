"""What the broker adds to a message it delivers, and how a task or the result backend reads it.

On its first delivery a consumer sees exactly the headers that were published. Delivery
metadata travels in the message *properties* (which kombu hands to Celery as
``request.properties``); only a redelivery also carries a ``delivery_count`` header, as
RabbitMQ quorum queues add ``x-delivery-count``, so ``self.request.delivery_count`` is 2, 3, …
on a redelivery and absent (``None``) on the first delivery.
"""

from __future__ import annotations

from typing import Any

#: header added on redeliveries only (2, 3, …)
DELIVERY_COUNT = "delivery_count"

#: message properties of the delivered copy (never stored, never in the headers)
QUEUE = "tq_queue"  # the queue the message is leased from
DELIVERED_AT = "tq_delivered_at"  # epoch seconds when this consumer leased it
DELIVERIES = "tq_delivery_count"  # 1 on the first delivery
PUBLISHED_AT = "tq_published_at"  # epoch ms when it was first published
REPLAYS = "tq_replays"  # how often it was replayed from the dead letters
QUEUED_AT = "tq_queued_at"  # epoch ms of its latest replay from the dead letters, else PUBLISHED_AT

#: every property above, removed when a message is rebuilt for the dead letters
DELIVERY_PROPERTIES = (QUEUE, DELIVERED_AT, DELIVERIES, PUBLISHED_AT, REPLAYS, QUEUED_AT)


def properties_of(request: Any) -> dict[str, Any]:
    """The message properties of a Celery request (``Context`` or worker ``Request``)."""
    found = getattr(request, "properties", None)
    if not isinstance(found, dict):
        request_dict = getattr(request, "request_dict", None) or {}
        found = request_dict.get("properties")
    return found if isinstance(found, dict) else {}


def delivery_count(request: Any) -> int:
    """How often this message has been delivered, this delivery included (1 when unknown)."""
    value = properties_of(request).get(DELIVERIES)
    return value if isinstance(value, int) and value > 0 else 1


def delivered_at(request: Any) -> float | None:
    """When this package's broker leased the message to the worker (epoch seconds)."""
    value = properties_of(request).get(DELIVERED_AT)
    return float(value) if isinstance(value, int | float) else None


def published_at(request: Any) -> float | None:
    """When the message was first published to this package's broker (epoch seconds)."""
    return _epoch_ms(properties_of(request).get(PUBLISHED_AT))


def queued_at(request: Any) -> float | None:
    """Where the message's queue wait starts (epoch seconds): its latest replay from the dead
    letters, else its first publish (a replay of a day-old dead letter has not waited a day)."""
    return _epoch_ms(properties_of(request).get(QUEUED_AT))


def _epoch_ms(value: Any) -> float | None:
    return value / 1000 if isinstance(value, int | float) and value > 0 else None
