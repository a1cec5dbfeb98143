"""``celery inspect scheduled`` (and Flower's Scheduled tab) with delayed tasks in the broker.

With kombu's stock Redis transport a worker fetches ETA/countdown tasks at once and holds them
in memory until they are due, so ``inspect scheduled`` lists them. With this broker they wait in
each queue's delayed set instead; the transport replaces the worker's ``scheduled`` inspect
command with one that lists, in stock's shape, the delayed messages of the queues the worker
consumes (read from the broker, at most ``LIMIT`` per queue, soonest first) after whatever the
worker's own timer holds. Several workers consuming one queue each list its delayed tasks.

Each entry is what a stock worker would list for the same message: ``eta`` is the message's
``eta`` header read as the worker reads it (``Request.eta``, an aware datetime) and written
back with ``isoformat()``; the top-level ``priority`` is that of the worker's timer entry,
which Celery's task strategy gives every ETA request (``TIMER_PRIORITY``), while the message's
own priority is in ``request.delivery_info``.
"""

from __future__ import annotations

import logging
from datetime import tzinfo
from typing import Any, cast

from kombu.serialization import loads

from . import fields
from .keys import QueueKeys
from .replies import as_text

logger = logging.getLogger(__name__)

LIMIT = 1000
#: the priority of the timer entry a stock worker holds an ETA request in:
#: ``celery.worker.strategy.default`` schedules every one with ``call_at(..., priority=6)``
#: (kombu's timer keeps the number but does not order by it)
TIMER_PRIORITY = 6


def delayed_messages(
    client: Any, prefix: str, queue: str, limit: int = LIMIT
) -> list[fields.StoredMessage]:
    """The queue's delayed messages, soonest first."""
    keys = QueueKeys(prefix, queue)
    ids = [as_text(i) or "" for i in cast(list[bytes], client.zrange(keys.delayed, 0, limit - 1))]
    pipe = client.pipeline(transaction=False)
    for message_id in ids:
        pipe.hmget(keys.message(message_id), fields.RECORD_FIELDS)
    found = (fields.read_record(queue, m, v) for m, v in zip(ids, pipe.execute(), strict=True))
    return [m for m in found if m is not None]


def _decoded_arguments(payload: dict[str, Any], accept: Any) -> tuple[Any, Any]:
    import base64

    body = payload.get("body")
    if payload.get("properties", {}).get("body_encoding") == "base64" and isinstance(body, str):
        body = base64.b64decode(body)
    args, kwargs, _embed = loads(
        body, payload.get("content-type"), payload.get("content-encoding"), accept=accept
    )
    return args, kwargs


def stock_eta(
    message: fields.StoredMessage, headers: dict[str, Any], timezone: tzinfo | str | None
) -> str | None:
    """The ``eta`` a stock worker lists for this message: its ``eta`` header parsed as
    ``celery.worker.request.Request`` parses it (a naive time is taken in the app's
    ``timezone``), in ``isoformat()``; the broker's due time when the header is missing or
    not readable."""
    from celery.utils.time import maybe_iso8601, maybe_make_aware

    header = headers.get("eta")
    if header is not None:
        try:
            return str(maybe_make_aware(maybe_iso8601(header), timezone).isoformat())
        except (AttributeError, ValueError, TypeError):
            pass  # the worker would refuse it; the broker's due time is still true
    return message.due_at.isoformat() if message.due_at else None


def as_schedule_entry(
    message: fields.StoredMessage,
    hostname: str,
    accept: Any,
    timezone: tzinfo | str | None = None,
) -> dict[str, Any] | None:
    """A delayed message in the shape of a worker's ``inspect scheduled`` entry."""
    import json

    try:
        payload = json.loads(message.body or b"")
    except ValueError:
        return None
    headers = payload.get("headers") or {}
    try:
        args, kwargs = _decoded_arguments(payload, accept)
    except Exception:  # not decodable here: show what the publisher said
        args, kwargs = headers.get("argsrepr"), headers.get("kwargsrepr")
    return {
        "eta": stock_eta(message, headers, timezone),
        "priority": TIMER_PRIORITY,
        "request": {
            "id": message.task_id or headers.get("id"),
            "name": headers.get("task"),
            "args": args,
            "kwargs": kwargs,
            "type": headers.get("task"),
            "hostname": hostname,
            "time_start": None,
            "acknowledged": False,
            "delivery_info": {
                "exchange": (payload.get("properties", {}).get("delivery_info") or {}).get(
                    "exchange"
                ),
                "routing_key": message.queue,
                "priority": message.priority,
                "redelivered": message.deliveries > 0,
            },
            "worker_pid": None,
        },
    }


def scheduled(state: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """List of currently scheduled ETA/countdown tasks (the worker's, then the broker's)."""
    from celery.worker import control

    from .channel import TaskQueueChannel

    consumer = state.consumer
    found = list(control._iter_schedule_requests(consumer.timer))
    task_consumer: Any = getattr(consumer, "task_consumer", None)
    channel = getattr(task_consumer, "channel", None)
    if task_consumer is None or not isinstance(channel, TaskQueueChannel):
        return found
    accept = getattr(task_consumer, "accept", None)
    timezone = consumer.app.conf.timezone
    try:
        for queue in sorted({q.name for q in task_consumer.queues}):
            for message in delayed_messages(channel.redis, channel.global_keyprefix, queue):
                entry = as_schedule_entry(message, consumer.hostname, accept, timezone)
                if entry is not None:
                    found.append(entry)
    except channel.connection_errors as exc:
        logger.warning("inspect scheduled: could not read the delayed tasks: %s", exc)
    return found


def install() -> None:
    from celery.worker.control import inspect_command

    inspect_command(alias="dump_schedule")(scheduled)
