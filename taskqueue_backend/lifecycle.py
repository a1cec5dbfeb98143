"""In-process notifications of what the broker did to a task's message.

The broker emits (dead-lettered, returned after its worker died); the result backend, when
the same process has one configured, listens and writes them into the task's history. The
broker never imports the backend: this module is the only thing they share.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MessageEvent:
    """One thing that happened to a task's message in the broker."""

    event: str  # dead_lettered | returned
    task_id: str
    queue: str
    detail: dict[str, Any] = field(default_factory=dict)
    worker: str | None = None
    at: float = field(default_factory=time.time)


Listener = Callable[[MessageEvent], None]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def emit(event: MessageEvent) -> None:
    for listener in list(_listeners):
        try:
            listener(event)
        except Exception:  # a listener must never break the broker
            logger.exception(
                "lifecycle listener failed for %s of task %s", event.event, event.task_id
            )
