"""Dead letters for tasks that fail for good, captured from stock workers by configuration.

Celery acknowledges a task that raised (after its last retry, or with no retry at all) and
keeps nothing but the result. When the app's broker is this transport, a ``task_failure``
handler in the process that ran the task keeps it as a dead letter, with the exception type,
message and traceback — without publishing anything (no new task message, no ``task-sent``
event, no child of the failed task):

- a late-acknowledged task's message is still leased when it fails: the broker keeps a copy
  of it, byte for byte, before the worker acknowledges the original;
- a task acknowledged on start has no message left: the handler rebuilds the message it ran
  from its request — the same headers (Celery's and the custom ones, the retry count
  included), properties, priority and queue, the arguments and the canvas (callbacks,
  errbacks, chain, chord) re-encoded with the task's serializer — and stores it straight into
  the queue's dead letters, keeping the original's publish time and replay count.

Either way, replaying the entry runs the task as its failed attempt was delivered.

Celery does not always send ``task_failure`` with the task's request on the stack: its tracer
reports an error raised after the task's request was popped (a failed result write, say), and
a hard time limit is reported twice, by the pool's error callback (with the request) and then
by the timeout handler (without). The handler finds the request of a task that ran in this
process by its id (held weakly from ``task_prerun``), and keeps one failure per delivery.

Not dead-lettered here:

- ``Reject(requeue=False)`` and late-acknowledged tasks whose failure Celery answers with a
  reject (``task_acks_on_failure_or_timeout=False``): the broker buries the original
  message itself when the worker rejects it;
- tasks or queues that opted out: task option ``dead_letter=False`` (also through
  ``task_annotations``), ``taskqueue_dead_letter_failures = False`` for the whole app, or
  queues listed in ``taskqueue_dead_letter_exclude_queues``.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

from kombu.serialization import dumps

from .. import headers as delivery
from .. import worker_info
from ..selection import uses_taskqueue_broker
from ..vocabulary import DeadLetterReason

logger = logging.getLogger(__name__)

MAX_TRACEBACK = 64 * 1024
#: the headers of Celery's task protocol 2, in the order Celery writes them
PROTOCOL_HEADERS = (
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
    "replaced_task_nesting", "stamped_headers", "stamps",
)  # fmt: skip
#: the canvas Celery keeps in the message body beside the arguments
EMBED = ("callbacks", "errbacks", "chain", "chord")
#: a second report of one task's failure within this long is the same failure
REPEAT_WINDOW = 60.0
REMEMBERED = 1000

#: the requests of tasks running in this process, by task id (weakly: gone with the task)
_requests: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
#: task id -> (its delivery, when) of the failures kept (or handed over) in this process
_reported: OrderedDict[str, tuple[Any, float]] = OrderedDict()
_lock = threading.Lock()


def on_task_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    request = getattr(task, "request", None)
    if task_id and request is not None:
        try:
            _requests[task_id] = request
        except TypeError:  # not weakly referable: found only while on the stack
            pass


def request_of(task: Any, task_id: str | None) -> Any:
    """The request a task ran with: on the stack, or remembered from its start."""
    current = getattr(task, "request", None)
    if task_id and getattr(current, "id", None) == task_id:
        return current
    return _requests.get(task_id or "")


def _delivery(request: Any) -> Any:
    return delivery.delivered_at(request) or id(request)


def first_report(task_id: str, request: Any) -> bool:
    """Whether this is the first report of this delivery's failure (and remember it);
    ``request`` None: a report that cannot say which delivery it is about."""
    now = time.monotonic()
    with _lock:
        seen = _reported.get(task_id)
        if seen is not None and now - seen[1] < REPEAT_WINDOW:
            if request is None or seen[0] == _delivery(request):
                return False
        if request is not None:
            _reported[task_id] = (_delivery(request), now)
            _reported.move_to_end(task_id)
            while len(_reported) > REMEMBERED:
                _reported.popitem(last=False)
    return True


def _routing_key(request: Any) -> str:
    info = getattr(request, "delivery_info", None) or {}
    return str(info.get("routing_key") or "")


def queue_of(request: Any) -> str:
    """The queue the request's message was leased from (its routing key otherwise)."""
    return str(delivery.properties_of(request).get(delivery.QUEUE) or _routing_key(request))


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
    return _routing_key(request) not in excluded


def describe(
    request: Any, exception: BaseException, traceback: str | None,
    reason: str = DeadLetterReason.FAILED, detail: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The dead letter's reason and failure details (the tail of the bury scripts' ARGV)."""
    kind = type(exception)
    text = traceback or ""
    if len(text) > MAX_TRACEBACK:
        text = "…(start cut)…\n" + text[-MAX_TRACEBACK:]
    return {
        "reason": reason,
        "detail": (detail or f"{kind.__name__}: {exception}")[:2000],
        "exc_type": f"{kind.__module__}.{kind.__qualname__}",
        "exc_message": str(exception)[:8192],
        "traceback": text,
        "worker": getattr(request, "hostname", None) or "",
        "deliveries": delivery.delivery_count(request),
        "task_id": str(getattr(request, "id", "") or ""),
    }


def rebuild_message(task: Any, request: Any, args: Any, kwargs: Any) -> dict[str, Any]:
    """The kombu envelope of the message this request ran, as the broker stores messages.

    Its body is still encoded (``serializer`` of the task); the channel applies its body
    encoding when it stores it (``burying.bury_rebuilt``).
    """
    found = vars(request)
    headers = {name: found.get(name) for name in PROTOCOL_HEADERS}
    custom = dict(getattr(request, "headers", None) or {})
    custom.pop(delivery.DELIVERY_COUNT, None)  # added by this broker on a redelivery
    headers.update(custom)
    properties = dict(delivery.properties_of(request))
    for added in delivery.DELIVERY_PROPERTIES:
        properties.pop(added, None)
    info = dict(properties.get("delivery_info") or {})
    info.pop("redelivered", None)
    properties["delivery_info"] = info
    embed = {name: found.get(name) for name in EMBED}
    content_type, content_encoding, body = dumps(
        [list(args or ()), dict(kwargs or {}), embed], serializer=task.serializer
    )
    return {
        "body": body,
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": properties,
    }


def channel_of(producer: Any) -> Any:
    from .channel import TaskQueueChannel

    channel = producer.channel
    return channel if isinstance(channel, TaskQueueChannel) else None


def copy_leased(task: Any, request: Any, entry: dict[str, Any]) -> bool:
    """A late-acknowledged task's message is still leased when it fails: keep its bytes."""
    properties = delivery.properties_of(request)
    message_id = properties.get("delivery_tag")
    queue = properties.get(delivery.QUEUE)
    if not message_id or not queue:
        return False
    with task.app.producer_or_acquire() as producer:
        channel = channel_of(producer)
        return channel is not None and channel.bury_copy(str(queue), str(message_id), entry)


def bury_rebuilt(task: Any, request: Any, envelope: dict[str, Any], entry: dict[str, Any]) -> bool:
    properties = delivery.properties_of(request)
    queue = queue_of(request)
    if not queue:
        return False
    original = {"published_at": properties.get(delivery.PUBLISHED_AT),
                "replays": properties.get(delivery.REPLAYS)}  # fmt: skip
    with task.app.producer_or_acquire() as producer:
        channel = channel_of(producer)
        if channel is None:
            return False
        channel.bury_rebuilt(queue, envelope, {**entry, **original})
        return True


def count_failure(app: Any, hostname: str) -> None:
    """One more failed task for this worker process in the registry (see ``recovery``)."""
    from . import recovery

    with app.producer_or_acquire() as producer:
        channel = channel_of(producer)
        if channel is not None:
            recovery.count_failure(
                channel.redis, channel.global_keyprefix, hostname, worker_info.main_pid()
            )


def keep(
    task: Any, request: Any, entry: dict[str, Any], args: Any = None, kwargs: Any = None
) -> bool:
    """Keep a task's message as a dead letter: the leased bytes of a late-acknowledged one
    when the broker still holds them, else the message rebuilt from its request (with
    ``args``/``kwargs`` when given, else the request's)."""
    if task.acks_late and copy_leased(task, request, entry):
        return True
    args = getattr(request, "args", None) if args is None else args
    kwargs = getattr(request, "kwargs", None) if kwargs is None else kwargs
    return bury_rebuilt(task, request, rebuild_message(task, request, args, kwargs), entry)


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
    if task is None or exception is None or not task_id:
        return
    request = request_of(task, task_id)
    if getattr(request, "is_eager", False) or not uses_taskqueue_broker(task.app):
        return
    if not first_report(task_id, request):
        return  # Celery's second report of one failure (a hard time limit)
    if request is None:
        logger.error("could not dead-letter failed task %s[%s]: Celery reported its failure "
                     "outside the task and its request is not known in this process",
                     getattr(task, "name", "?"), task_id)  # fmt: skip
        return
    try:
        count_failure(task.app, getattr(request, "hostname", None) or "")
    except Exception:
        logger.warning("could not count the failure of task %s in the worker registry", task_id,
                       exc_info=True)  # fmt: skip
    try:
        if not should_dead_letter(task, exception, request):
            return
        entry = describe(request, exception, getattr(einfo, "traceback", None))
        if not keep(task, request, entry, args, kwargs):
            logger.error("could not dead-letter failed task %s[%s]: it was not delivered by "
                         "this broker", getattr(task, "name", "?"), task_id)  # fmt: skip
    except Exception:
        logger.exception(
            "could not dead-letter failed task %s[%s]; its failure is only in the result backend",
            getattr(task, "name", "?"),
            task_id,
        )


def install() -> None:
    from celery import signals

    signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="tq-failure-prerun")
    signals.task_failure.connect(on_task_failure, weak=False, dispatch_uid="tq-dead-letter")
