"""Celery signal handlers of the transport, installed once per process when it is selected.

``Transport.__init__`` calls :func:`install`: a Celery worker creates its transport while it
sets itself up, before its pool processes start, so every pool process has the handlers too.
They name the worker in the consumer registry, give dead letters the reason Celery reports
after it rejects a message (unknown task name, invalid message), keep failed tasks as dead
letters (``failures``), revoke expired ones as a stock worker would (``expiry``) and list the
broker's delayed tasks in ``inspect scheduled``.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import worker_info
from ..selection import TRANSPORT_ALIAS, TRANSPORT_PATH
from ..vocabulary import DeadLetterReason

_installed = False
_lock = threading.Lock()


def _channel_of(message: Any) -> Any:
    from .channel import TaskQueueChannel

    found = getattr(message, "channel", None)
    return found if isinstance(found, TaskQueueChannel) else None


def on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    """``worker_init``: the worker's node name and pool size, for the consumer registry; the
    broker's delayed tasks in ``inspect scheduled``."""
    from . import expiry, scheduled

    scheduled.install()
    hostname = getattr(sender, "hostname", None)
    expiry.on_worker_init(getattr(sender, "app", None), hostname)
    if hostname:
        worker_info.WORKER_NODENAME = str(hostname)
    concurrency = getattr(sender, "concurrency", None)
    if isinstance(concurrency, int):
        worker_info.WORKER_CONCURRENCY = concurrency


def on_after_setup(sender: Any = None, instance: Any = None, **kwargs: Any) -> None:
    """``celeryd_after_setup``: the concurrency is final now (``auto`` is resolved)."""
    if sender:
        worker_info.WORKER_NODENAME = str(sender)
    concurrency = getattr(instance, "concurrency", None)
    if isinstance(concurrency, int):
        worker_info.WORKER_CONCURRENCY = concurrency


def on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    """``worker_ready`` (sender: the consumer): its event dispatcher, for ``expiry``."""
    from . import expiry

    expiry.on_worker_ready(sender)


def on_pool_process_init(**kwargs: Any) -> None:
    worker_info.entered_pool_process()


def on_task_unknown(message: Any = None, name: Any = None, **kwargs: Any) -> None:
    channel = _channel_of(message)
    if channel is not None:
        channel.annotate_dead_letter(
            message.delivery_tag,
            DeadLetterReason.UNKNOWN_TASK,
            f"no task named {name!r} is registered on the worker that received it",
        )


def on_task_rejected(message: Any = None, exc: Any = None, **kwargs: Any) -> None:
    channel = _channel_of(message)
    if channel is not None:
        detail = f"{type(exc).__name__}: {exc}" if exc is not None else "not a Celery task message"
        channel.annotate_dead_letter(message.delivery_tag, DeadLetterReason.INVALID_MESSAGE, detail)


def install() -> None:
    """Connect the handlers and register the ``tq`` scheme (once; later calls do nothing)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    worker_info.selected_here()
    from kombu.transport import TRANSPORT_ALIASES

    TRANSPORT_ALIASES.setdefault(TRANSPORT_ALIAS, TRANSPORT_PATH)
    try:
        from celery import signals
    except ImportError:  # kombu used without Celery
        return
    from .. import lifecycle, worker_metrics
    from . import expiry, failures, unrecorded_tasks

    signals.worker_init.connect(on_worker_init, weak=False, dispatch_uid="tq-worker-init")
    signals.celeryd_after_setup.connect(on_after_setup, weak=False,
                                        dispatch_uid="tq-worker-setup")  # fmt: skip
    signals.worker_ready.connect(on_worker_ready, weak=False, dispatch_uid="tq-worker-ready")
    lifecycle.subscribe(expiry.on_broker_events)
    signals.worker_process_init.connect(on_pool_process_init, weak=False,
                                        dispatch_uid="tq-pool-process")  # fmt: skip
    signals.task_unknown.connect(on_task_unknown, weak=False, dispatch_uid="tq-task-unknown")
    signals.task_rejected.connect(on_task_rejected, weak=False, dispatch_uid="tq-task-rejected")
    failures.install()
    unrecorded_tasks.install()
    worker_metrics.connect()
