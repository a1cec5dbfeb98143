"""Tasks the result store could not record, handed to the broker so that none is lost.

While the result store is unreachable a worker holds each task it has not finished recording
(``backend.outage``). When the retry window runs out, the result backend hands the task to the
broker this process uses, through the handlers registered here:

- ``put_back``: a task that could not record STARTED has not run; its message goes back to
  its queue. A late-acknowledged message goes back by Celery's reject; one acknowledged when
  the task started is rebuilt from the request and put back by the broker.
- ``keep``: a task that ran and could not record its outcome is kept in the dead letters
  with reason ``result_store_unavailable``, the outcome in its detail, so an operator sees
  it and can replay it.

The broker registers its handlers when it is selected; the backend never imports the broker,
and a worker on another broker has no handler (``keep`` and ``put_back`` say False).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .vocabulary import DeadLetterReason

logger = logging.getLogger(__name__)

#: the dead-letter reason of a task whose outcome the result store could not record
REASON = DeadLetterReason.RESULT_STORE_UNAVAILABLE


@dataclass(frozen=True)
class Unrecorded:
    """One task the result store could not record."""

    task: Any  # the Celery task
    request: Any  # the request it ran with (a Celery ``Context``)
    state: str  # the state that could not be written
    outcome: str  # what it would have recorded, for people: "SUCCESS: 42"
    error: BaseException  # the result store's last error
    traceback: str | None = None  # the task's own traceback, when it failed

    @property
    def task_id(self) -> str:
        return str(getattr(self.request, "id", "") or "")


Handler = Callable[[Unrecorded], bool]
_handlers: dict[str, Handler] = {}


def register(keep: Handler, put_back: Handler) -> None:
    """The broker's handlers (once per process; a later call replaces them)."""
    _handlers.update(keep=keep, put_back=put_back)


def _hand(kind: str, item: Unrecorded) -> bool:
    handler = _handlers.get(kind)
    if handler is None:
        return False
    try:
        return bool(handler(item))
    except Exception:  # the broker may be down too: the caller says what is lost
        logger.exception("could not hand task %s to the broker (%s)", item.task_id, kind)
        return False


def keep(item: Unrecorded) -> bool:
    """Keep a task whose outcome could not be recorded in the dead letters; True if kept."""
    return _hand("keep", item)


def put_back(item: Unrecorded) -> bool:
    """Put an acknowledged task that did not run back in its queue; True if done."""
    return _hand("put_back", item)
