"""In-process notifications of what the broker did to a task's message.

The broker emits (dead-lettered, returned after its worker died) and so do the operators'
tools (replayed, dead letter deleted); the result backend, when
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

    event: str  # dead_lettered | returned | replayed | dead_letter_deleted
    task_id: str
    queue: str
    detail: dict[str, Any] = field(default_factory=dict)
    worker: str | None = None
    at: float = field(default_factory=time.time)


#: called with a batch of events (one, or all the tasks of one bulk operation)
Listener = Callable[[list[MessageEvent]], None]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def emit(event: MessageEvent) -> None:
    emit_all([event])


def emit_all(events: list[MessageEvent]) -> None:
    """Tell every listener, synchronously (a replay relies on that: see ``dlq``)."""
    if not events:
        return
    for listener in list(_listeners):
        try:
            listener(events)
        except Exception:  # a listener must never break the broker
            logger.exception(
                "lifecycle listener failed for %d event(s), first %s of task %s",
                len(events), events[0].event, events[0].task_id,
            )  # fmt: skip
