"""Celery signal handlers that the transport installs on import (configuration only).

They name the worker in the consumer registry and give dead letters the reason Celery
reports after it rejects a message (unknown task name, invalid message).
"""

from __future__ import annotations

from typing import Any

from . import channel as channel_module
from . import failures, worker_info


def _channel_of(message: Any) -> channel_module.TaskQueueChannel | None:
    found = getattr(message, "channel", None)
    return found if isinstance(found, channel_module.TaskQueueChannel) else None


def on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    if sender:
        worker_info.WORKER_NODENAME = str(sender)


def on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    """``worker_init`` passes the worker; ``celeryd_init`` fires before this module loads."""
    hostname = getattr(sender, "hostname", None)
    if hostname:
        worker_info.WORKER_NODENAME = str(hostname)
    concurrency = getattr(sender, "concurrency", None)
    if isinstance(concurrency, int):
        worker_info.WORKER_CONCURRENCY = concurrency


def on_task_unknown(message: Any = None, name: Any = None, **kwargs: Any) -> None:
    channel = _channel_of(message)
    if channel is not None:
        channel.annotate_dead_letter(
            message.delivery_tag,
            "unknown_task",
            f"no task named {name!r} is registered on the worker that received it",
        )


def on_task_rejected(message: Any = None, exc: Any = None, **kwargs: Any) -> None:
    channel = _channel_of(message)
    if channel is not None:
        detail = f"{type(exc).__name__}: {exc}" if exc is not None else "not a Celery task message"
        channel.annotate_dead_letter(message.delivery_tag, "invalid_message", detail)


def install() -> None:
    try:
        from celery import signals
    except ImportError:  # kombu used without Celery
        return
    signals.celeryd_init.connect(on_worker_init, weak=False, dispatch_uid="tq-worker-init")
    signals.worker_init.connect(on_worker_ready, weak=False, dispatch_uid="tq-worker-ready")
    signals.task_unknown.connect(on_task_unknown, weak=False, dispatch_uid="tq-task-unknown")
    signals.task_rejected.connect(on_task_rejected, weak=False, dispatch_uid="tq-task-rejected")
    failures.install()
