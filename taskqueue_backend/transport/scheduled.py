"""``celery inspect scheduled`` (and Flower's Scheduled tab) with delayed tasks in the broker.

With kombu's stock Redis transport a worker fetches ETA/countdown tasks at once and holds them
in memory until they are due, so ``inspect scheduled`` lists them. With this broker they wait in
each queue's delayed set instead; the transport replaces the worker's ``scheduled`` inspect
command with one that lists, in stock's shape, the delayed messages of the queues the worker
consumes (read from the broker, at most ``LIMIT`` per queue, soonest first) after whatever the
worker's own timer holds. Several workers consuming one queue each list its delayed tasks.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from kombu.serialization import loads

from ..clock import iso
from . import fields
from .keys import QueueKeys
from .replies import as_text

logger = logging.getLogger(__name__)

LIMIT = 1000


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


def as_schedule_entry(
    message: fields.StoredMessage, hostname: str, accept: Any
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
        "eta": iso(message.due_at),
        "priority": message.priority,
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
    try:
        for queue in sorted({q.name for q in task_consumer.queues}):
            for message in delayed_messages(channel.redis, channel.global_keyprefix, queue):
                entry = as_schedule_entry(message, consumer.hostname, accept)
                if entry is not None:
                    found.append(entry)
    except channel.connection_errors as exc:
        logger.warning("inspect scheduled: could not read the delayed tasks: %s", exc)
    return found


def install() -> None:
    from celery.worker.control import inspect_command

    inspect_command(alias="dump_schedule")(scheduled)
