"""Dead letters for tasks that fail for good, captured from stock workers by configuration.

Celery acknowledges a task that raised (after its last retry, or with no retry at all) and
keeps nothing but the result. When the app's broker is this transport, a ``task_failure``
handler in the process that ran the task keeps it as a dead letter, with the exception type,
message and traceback:

- a late-acknowledged task's message is still leased when it fails: the broker keeps a copy
  of it, byte for byte, before the worker acknowledges the original;
- a task acknowledged on start has no message left: the handler publishes the task once
  more as Celery builds a retry (``Task.signature_from_request``: same id, name, arguments,
  headers, priority, queue), with a header that makes the transport store it straight into
  the queue's dead letters.

Either way, replaying the entry runs the task as its failed attempt was delivered (the retry
count included).

Not dead-lettered here:

- ``Reject(requeue=False)`` and late-acknowledged tasks whose failure Celery answers with a
  reject (``task_acks_on_failure_or_timeout=False``): the broker buries the original
  message itself when the worker rejects it;
- tasks or queues that opted out: task option ``dead_letter=False`` (also through
  ``task_annotations``), ``taskqueue_dead_letter_failures = False`` for the whole app, or
  queues listed in ``taskqueue_dead_letter_exclude_queues``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger(__name__)

#: the header that asks the transport to store a published message as a dead letter
HEADER = "x-tq-dead-letter"
MAX_TRACEBACK = 64 * 1024
#: headers the transport adds to the copy it delivers (see ``messages.for_delivery``)
DELIVERY_HEADERS = ("delivery_count", "tq_delivered_at")


def _uses_this_transport(app: Any) -> bool:
    from . import transport

    selected = app.conf.broker_transport
    if selected is None:
        return str(app.conf.broker_url or "").startswith("tq://")
    if isinstance(selected, str):
        return selected.startswith("taskqueue_backend.transport") or selected == "tq"
    return isinstance(selected, type) and issubclass(selected, transport.Transport)


def _queue_of(request: Any) -> str:
    info = getattr(request, "delivery_info", None) or {}
    return str(info.get("routing_key") or "")


def should_dead_letter(task: Any, exception: BaseException, request: Any) -> bool:
    """For a task run by a worker of this transport: whether its failure is kept."""
    from celery.exceptions import Reject, TimeLimitExceeded, WorkerLostError

    app = task.app
    if isinstance(exception, Reject):
        return False  # the worker rejects the message; the broker buries the original
    if task.acks_late:
        timeout = isinstance(exception, TimeLimitExceeded)
        acks = task.acks_on_timeout if timeout else task.acks_on_failure
        if not acks:
            return False  # rejected without requeue: the broker buries the original
        if isinstance(exception, WorkerLostError) and task.reject_on_worker_lost:
            return False  # requeued: it runs again
    if not app.conf.get("taskqueue_dead_letter_failures", True):
        return False
    if getattr(task, "dead_letter", True) is False:
        return False
    excluded = app.conf.get("taskqueue_dead_letter_exclude_queues") or ()
    return _queue_of(request) not in excluded


def describe(task: Any, exception: BaseException, traceback: str | None) -> dict[str, Any]:
    kind = type(exception)
    text = traceback or ""
    if len(text) > MAX_TRACEBACK:
        text = "…(start cut)…\n" + text[-MAX_TRACEBACK:]
    return {
        "reason": "failed",
        "detail": f"{kind.__name__}: {exception}"[:2000],
        "exc_type": f"{kind.__module__}.{kind.__qualname__}",
        "exc_message": str(exception)[:8192],
        "traceback": text,
        "worker": getattr(task.request, "hostname", None) or "",
        "deliveries": task.request.get("delivery_count") or 1,
    }


def copy_leased(task: Any, request: Any, entry: dict[str, Any]) -> bool:
    """A late-acknowledged task's message is still leased when it fails: keep its bytes."""
    from .channel import TaskQueueChannel

    properties = getattr(request, "properties", None) or {}
    message_id, queue = properties.get("delivery_tag"), properties.get("tq_queue")
    if not message_id or not queue:
        return False
    with task.app.producer_or_acquire() as producer:
        channel = producer.channel
        return isinstance(channel, TaskQueueChannel) and channel.bury_copy(
            str(queue), str(message_id), entry
        )


def count_failure(app: Any, hostname: str) -> None:
    """One more failed task for this node in the worker registry (``{tq}:failed``)."""
    from .channel import TaskQueueChannel
    from .keys import GlobalKeys

    with app.producer_or_acquire() as producer:
        channel = producer.channel
        if isinstance(channel, TaskQueueChannel):
            channel.redis.hincrby(GlobalKeys(channel.global_keyprefix).failed, hostname, 1)


def on_task_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    einfo: Any = None,
    **extra: Any,
) -> None:
    task = sender
    if task is None or exception is None:
        return
    request = task.request
    if getattr(request, "is_eager", False) or not _uses_this_transport(task.app):
        return
    try:
        count_failure(task.app, getattr(request, "hostname", None) or "")
    except Exception:
        logger.warning("could not count the failure of task %s in the worker registry", task_id,
                       exc_info=True)  # fmt: skip
    try:
        if not should_dead_letter(task, exception, request):
            return
        entry = describe(task, exception, getattr(einfo, "traceback", None))
        if task.acks_late and copy_leased(task, request, {**entry, "task_id": task_id}):
            return
        signature = task.signature_from_request(request, args, kwargs)
        headers = dict(signature.options.get("headers") or {})
        for added in DELIVERY_HEADERS:  # set by the broker on delivery, not by the publisher
            headers.pop(added, None)
        signature.options["headers"] = {**headers, HEADER: json.dumps(entry)}
        signature.apply_async()
    except Exception:
        logger.exception(
            "could not dead-letter failed task %s[%s]; its failure is only in the result backend",
            getattr(task, "name", "?"),
            task_id,
        )


def install() -> None:
    from celery import signals

    signals.task_failure.connect(on_task_failure, weak=False, dispatch_uid="tq-dead-letter")
