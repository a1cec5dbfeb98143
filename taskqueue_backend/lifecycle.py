"""Every lifecycle event of a task, by name, and the in-process notifications that carry them.

The names are the ``event`` column of the result backend's history and the vocabulary of every
view. The broker emits some of them in the process that saw them happen (a worker dead-letters
or rejects a message, a live worker returns a dead one's messages); the result backend, when
the same process has one configured, listens and writes them into the task's history. The
broker never imports the backend: this module is the only thing they share. Operations that
run outside a worker (replays, deletes, removes) write their history rows through the result
store they were given, not through these notifications.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .vocabulary import Event

logger = logging.getLogger(__name__)

# the names, as module constants (``vocabulary.Event`` defines them)
SENT = Event.SENT
RECEIVED = Event.RECEIVED
STARTED = Event.STARTED
RETRIED = Event.RETRIED
SUCCEEDED = Event.SUCCEEDED
FAILED = Event.FAILED
REVOKED = Event.REVOKED
REJECTED = Event.REJECTED
DEAD_LETTERED = Event.DEAD_LETTERED
RETURNED = Event.RETURNED
REPLAYED = Event.REPLAYED
DEAD_LETTER_DELETED = Event.DEAD_LETTER_DELETED

#: every event a task's history can hold, in the order a task usually meets them
EVENTS = tuple(Event)
#: events after which the task does not run again by itself
FINISHED = (SUCCEEDED, FAILED, REVOKED)
#: what the broker tells listeners in the process where it happened
BROKER_EVENTS = (DEAD_LETTERED, RETURNED, REJECTED)


@dataclass(frozen=True)
class MessageEvent:
    """One thing that happened to a task's message in the broker."""

    event: str  # one of BROKER_EVENTS
    task_id: str
    queue: str
    detail: dict[str, Any] = field(default_factory=dict)
    worker: str | None = None
    at: float = field(default_factory=time.time)
    #: the stored envelope, when a listener needs more than the task id (an expired message)
    message: dict[str, Any] | None = None


#: called with a batch of events (one, or all the tasks of one recovery)
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
    """Tell every listener, synchronously."""
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
