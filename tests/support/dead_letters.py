"""Making dead letters the way the broker does: a real consumer takes a message and buries it."""

from __future__ import annotations

from typing import Any

from celery import Celery

from tests.support.waiting import wait_for


def bury(
    app: Celery,
    name: str,
    args: tuple[Any, ...] = (),
    reason: str = "rejected",
    detail: str = "rejected without requeue",
    queue: str = "celery",
    priority: int | None = None,
) -> str:
    """Publish one task, take it with a real consumer and dead-letter it; its task id."""
    task_id = app.send_task(name, args, queue=queue, priority=priority).id
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        message = wait_for(lambda: channel.basic_get(queue), timeout=10, message="no message")
        channel.dead_letter(message.delivery_tag, reason, detail)
        channel.qos._delivered.pop(message.delivery_tag, None)
    return str(task_id)
