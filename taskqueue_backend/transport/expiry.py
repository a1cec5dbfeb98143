"""Messages found expired, treated as a stock worker treats an expired task.

A stock worker receives a message whose ``expires`` has passed and revokes it (Celery's
``Request._announce_revoked``): it sends ``task-revoked`` with ``expired=True``, stores REVOKED
with ``TaskRevokedError('expired')`` through the app's result backend (so ``get()`` raises it,
and a chord it belongs to fails), and sends ``task_revoked``. This broker never delivers such a
message — the consumer that finds it keeps it in the dead letters (reason ``expired``) — so in
a Celery worker's main process the transport does the same three things for it, whatever the
result backend. Nothing is stored for a task whose result Celery would not store
(``ignore_result`` without ``store_errors_even_if_ignored``). Outside a worker (a plain kombu
consumer) the dead letter is all.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from kombu.serialization import loads

from .. import lifecycle
from ..vocabulary import DeadLetterReason

logger = logging.getLogger(__name__)

#: the dead-letter reason fetch.lua gives, and Celery's revoke reason
REASON = DeadLetterReason.EXPIRED
#: the worker of this process: its app, node name and event dispatcher (set by the hooks)
_worker: dict[str, Any] = {}


def on_worker_init(app: Any, hostname: str | None) -> None:
    _worker.update(app=app, hostname=hostname)


def on_worker_ready(consumer: Any) -> None:
    _worker["dispatcher"] = getattr(consumer, "event_dispatcher", None)


def on_broker_events(events: list[lifecycle.MessageEvent]) -> None:
    app = _worker.get("app")
    if app is None:
        return
    for event in events:
        if event.event == lifecycle.DEAD_LETTERED and event.detail.get("reason") == REASON:
            if event.task_id and event.message:
                try:
                    revoke(app, event.task_id, event.queue, event.message)
                except Exception:  # the dead letter is kept whatever happens here
                    logger.exception("could not record expired task %s as revoked", event.task_id)


def revoke(app: Any, task_id: str, queue: str, envelope: dict[str, Any]) -> None:
    request = request_of(envelope, queue, _worker.get("hostname"), app)
    task = app.tasks.get(getattr(request, "task", None) or "")
    dispatcher = _worker.get("dispatcher")
    if dispatcher is not None and dispatcher.enabled and getattr(task, "send_events", True):
        dispatcher.send("task-revoked", uuid=task_id, terminated=False, signum=None, expired=True)
    found = getattr(request, "ignore_result", None)
    ignored = bool(getattr(task, "ignore_result", False) if found is None else found)
    store = not ignored or bool(getattr(task, "store_errors_even_if_ignored", False))
    app.backend.mark_as_revoked(task_id, REASON, request=request, store_result=store)
    if task is not None:
        from celery import signals

        signals.task_revoked.send(sender=task, request=request, terminated=False, signum=None,
                                  expired=True)  # fmt: skip


def request_of(envelope: dict[str, Any], queue: str, worker: str | None, app: Any) -> Any:
    """The request Celery would have built for this message (what the revoke needs)."""
    from celery.app.task import Context

    headers = dict(envelope.get("headers") or {})
    properties = dict(envelope.get("properties") or {})
    exchange = (properties.get("delivery_info") or {}).get("exchange")
    found: dict[str, Any] = {**headers, "hostname": worker, "properties": properties,
                             "delivery_info": {"routing_key": queue, "exchange": exchange},
                             "reply_to": properties.get("reply_to"),
                             "correlation_id": properties.get("correlation_id")}  # fmt: skip
    try:
        body = envelope.get("body")
        if properties.get("body_encoding") == "base64" and isinstance(body, str):
            body = base64.b64decode(body)
        args, kwargs, embed = loads(
            body, envelope.get("content-type"), envelope.get("content-encoding"),
            accept=app.conf.accept_content,
        )  # fmt: skip
        found.update(args=args, kwargs=kwargs, **(embed or {}))
    except Exception as exc:  # not decodable here: the headers say enough for the record
        logger.debug("expired task %s: body not decoded (%s)", headers.get("id"), exc)
    request = Context(found)
    request.group = headers.get("group")
    return request
