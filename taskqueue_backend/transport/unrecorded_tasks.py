"""The broker's side of tasks the result store could not record (``taskqueue_backend.unrecorded``).

- ``keep``: a task that ran, but whose outcome the result store did not take within the retry
  window, is kept as a dead letter with reason ``result_store_unavailable`` — the leased bytes
  of a late-acknowledged message, else the message rebuilt from its request — and the outcome
  it would have recorded in the entry's detail (and its traceback, when it failed). Replaying
  the entry runs the task again. Its later ``task_failure`` is then not kept a second time.
- ``put_back``: a task acknowledged on start that could not record STARTED did not run; its
  message, rebuilt from the request, is published to its queue again (its ``expires`` still
  counted from the original publish).

Registered when the transport is selected (``hooks.install``), in every process of a worker.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from .. import unrecorded
from ..selection import uses_taskqueue_broker
from . import failures

logger = logging.getLogger(__name__)


def keep(item: unrecorded.Unrecorded) -> bool:
    task, request = item.task, item.request
    if task is None or request is None or not uses_taskqueue_broker(task.app):
        return False
    detail = f"{item.outcome} — not recorded: the result store did not answer"
    entry = failures.describe(request, item.error, item.traceback, unrecorded.REASON, detail)
    if not failures.keep(task, request, entry):
        return False
    failures.first_report(item.task_id, request)  # its task_failure, if any, is this one
    return True


def put_back(item: unrecorded.Unrecorded) -> bool:
    task, request = item.task, item.request
    if task is None or request is None or not uses_taskqueue_broker(task.app):
        return False
    queue = failures.queue_of(request)
    if not queue:
        return False
    envelope = failures.rebuild_message(task, request, request.args, request.kwargs)
    _keep_expiry(envelope)
    with task.app.producer_or_acquire() as producer:
        channel = failures.channel_of(producer)
        if channel is None:
            return False
        channel.put_back_rebuilt(queue, envelope)
    return True


def _keep_expiry(envelope: dict[str, Any]) -> None:
    """The broker's TTL of a republished message runs from its original ``expires``."""
    expires = (envelope.get("headers") or {}).get("expires")
    properties = envelope["properties"]
    if not isinstance(expires, str):
        properties.pop("expiration", None)
        return
    try:
        when = datetime.fromisoformat(expires)
    except ValueError:
        return
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    left = (when - datetime.now(UTC)).total_seconds()
    properties["expiration"] = str(max(int(left * 1000), 0))


def install() -> None:
    unrecorded.register(keep, put_back)
