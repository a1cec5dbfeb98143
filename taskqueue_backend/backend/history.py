"""Capturing every task's life from stock workers, by configuration only.

Celery calls the backend for state changes it stores (started when tracked, retried,
succeeded, failed, revoked); the rest comes from Celery signals and from the broker's
lifecycle notifications, all connected when the backend is loaded:

- ``received`` (worker main process, ``task_received``) and broker events (dead-lettered,
  returned after its worker died, rejected) are batched by a writer thread: one transaction
  per batch, never a database call on the worker's event loop;
- ``started`` (pool process, ``task_prerun``) waits for the task's next state write so a
  short task's whole history lands in one statement; a long task's ``started`` is written
  by the writer after ``taskqueue_history_flush_interval``;
- ``sent`` (publisher, ``after_task_publish``) only with ``taskqueue_record_sent = True``;
- a ``retried`` event's ``next_eta`` is the ETA of the message the retry published (seen by
  ``after_task_publish`` in the task's own thread), not a countdown counted again from when
  Celery stores RETRY, which comes later.

What Celery does not store stays as Celery has it: a task with ``ignore_result`` leaves no
row and no history (as with any result backend, ``get_task_meta`` says PENDING), and the rows
these events create say PENDING (STARTED with ``task_track_started``) until Celery stores a
state — the stage times and the history say where the task is.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from datetime import UTC, datetime
from typing import Any

from celery import current_task, signals, states

from .. import headers as delivery
from .. import lifecycle
from ..clock import utcnow
from . import deferred, outage
from .queries import event_row

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_written = threading.Condition(_lock)  # notified when the writer's batch is committed
_starting = threading.RLock()  # one writer per process, started once
_pending: dict[str, list[dict[str, Any]]] = {}
_pending_rows: dict[str, dict[str, Any]] = {}
_backend: Any = None
_writer: Writer | None = None


#: how long a state write waits for the writer's batch holding the same task's earlier events
IN_FLIGHT_WAIT = 30.0


def take_pending(task_id: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Events (and the row update) of this task not written yet, for its state write.

    When the writer is committing a batch with this task's earlier events, waits for it: a
    task's history is committed in the order it happened, so a reader that follows the
    history (the change feed) never sees ``succeeded`` before the ``started`` of the same
    task. A failed batch puts its events back, and they are taken here.
    """
    with _written:
        current = _writer if _writer is not None and _writer.pid == os.getpid() else None
        if current is not None and task_id in current.in_flight:
            if not _written.wait_for(lambda: task_id not in current.in_flight, IN_FLIGHT_WAIT):
                logger.warning("task %s: earlier history events still being written", task_id)
        return _pending.pop(task_id, []), _pending_rows.pop(task_id, None)


_publishing: dict[str, Any] = {}
#: the ETA of the message a running task's retry published, by task id, until its RETRY write
_retry_etas: dict[str, str] = {}
#: retry ETAs kept at most (a retry whose RETRY is never stored must not grow the process)
RETRY_ETAS_KEPT = 1000


def publishing(task_id: str, backend: Any) -> None:
    """Remember which backend publishes this task (several apps may share a process)."""
    _publishing[task_id] = backend


def put_back(task_id: str, events: list[dict[str, Any]], row: dict[str, Any] | None) -> None:
    """Return what a failed write took, so the retried write (or the writer) has it."""
    with _lock:
        _pending.setdefault(task_id, [])[0:0] = events
        if row is not None:
            _pending_rows.setdefault(task_id, row)


def returned_event(task_id: str, request: Any, reason: str, detail: str) -> dict[str, Any]:
    """The history row of a task whose message went back to its queue without running."""
    queue = (getattr(request, "delivery_info", None) or {}).get("routing_key")
    worker = getattr(request, "hostname", None)
    return event_row(task_id, lifecycle.RETURNED, states.PENDING, worker,
                     {"reason": reason, "detail": detail, "queue": queue})  # fmt: skip


def hold(task_id: str, event: dict[str, Any], row: dict[str, Any] | None = None) -> None:
    """Keep an event for the task's next state write (or the writer's next batch)."""
    with _lock:
        _pending.setdefault(task_id, []).append(event)
        if row is not None:
            _pending_rows[task_id] = row
    writer().poke()


class Writer(threading.Thread):
    """Writes held events in batches, one transaction each."""

    def __init__(self, backend: Any) -> None:
        super().__init__(name="tq-history-writer", daemon=True)
        self.pid = os.getpid()
        self.interval = backend.settings.history_flush_interval
        self._stop_event = threading.Event()
        self.in_flight: frozenset[str] = frozenset()  # tasks of the batch being written

    def poke(self) -> None:
        if self.ident is None:
            with _starting:  # the threads pool holds events from several threads at once
                if self.ident is None:
                    self.start()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        with _lock:
            rows = dict(_pending_rows)
            events = [e for task_events in _pending.values() for e in task_events]
            self.in_flight = frozenset(_pending) | frozenset(_pending_rows)
            _pending.clear()
            _pending_rows.clear()
        if not events and not rows:
            return
        try:  # through the newest backend, as the handlers that held these events use it
            _backend.write_events(list(rows.values()), events)
            outage.outage_log.answered()
        except Exception as exc:
            if outage.unreachable(exc):
                outage.outage_log.failed(exc, f"{len(events)} task history event(s)")
            else:
                logger.exception("could not write %d task history event(s); will retry",
                                 len(events))  # fmt: skip
            with _lock:  # keep them for the next round (or the task's next state write)
                for e in reversed(events):
                    _pending.setdefault(e["task_id"], []).insert(0, e)
                for task_id, row in rows.items():
                    _pending_rows.setdefault(task_id, row)
        finally:
            with _written:
                self.in_flight = frozenset()
                _written.notify_all()

    def stop(self) -> None:
        self._stop_event.set()
        self.flush()


def writer() -> Writer:
    global _writer
    with _starting:
        if _writer is None or _writer.pid != os.getpid():
            _writer = Writer(_backend)
        return _writer


def _flush_at_exit() -> None:
    deferred.stop()
    if _writer is not None and _writer.pid == os.getpid():
        _writer.stop()


# -- signal handlers ---------------------------------------------------------------------


def ignored(task: Any, request: Any) -> bool:
    """Whether Celery stores nothing for this task (``ignore_result``, the request's own value
    first, as Celery's tracer decides)."""
    if isinstance(request, dict):
        found = request.get("ignore_result")
        return bool(getattr(task, "ignore_result", False) if found is None else found)
    try:
        from celery.app.task import get_actual_ignore_result
    except ImportError:  # Celery < 5.6
        found = getattr(request, "ignore_result", None)
        return bool(getattr(task, "ignore_result", False) if found is None else found)
    return bool(get_actual_ignore_result(task, request))


def _running_state(task: Any) -> str:
    """The state a row created by these events shows: what Celery itself would store."""
    tracked = getattr(task, "track_started", False)
    return states.STARTED if tracked else states.PENDING


def on_task_received(request: Any = None, **kwargs: Any) -> None:
    if request is None or _backend is None:
        return
    if delivery.delivered_at(request) is not None:
        return  # delivered by this package's broker: the pool process records "received"
    task = getattr(request, "task", None)
    if ignored(task, getattr(request, "request_dict", None)):
        return
    now = utcnow()
    delivery_info = getattr(request, "delivery_info", None) or {}
    worker = getattr(request, "hostname", None)
    row = {
        "task_id": request.id,
        "state": states.PENDING,
        "name": getattr(request, "task_name", None) or getattr(request, "name", None),
        "worker": worker,
        "queue": delivery_info.get("routing_key"),
        "retries": getattr(request, "request_dict", {}).get("retries"),
        "parent_id": getattr(request, "parent_id", None),
        "root_id": getattr(request, "root_id", None),
        "group_id": getattr(request, "group_id", None),
        "received_at": now,
        "updated_at": now,
    }
    detail = {"eta": str(request.eta)} if getattr(request, "eta", None) else None
    hold(request.id, event_row(request.id, lifecycle.RECEIVED, states.RECEIVED, worker, detail,
                               now), row)  # fmt: skip


def on_task_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    if not task_id or _backend is None:
        return
    request = getattr(task, "request", None)
    if request is None or ignored(task, request):
        return
    now = utcnow()
    worker = getattr(request, "hostname", None)
    row = {"task_id": task_id, "state": _running_state(task), "worker": worker,
           "started_at": now, "updated_at": now, "name": getattr(task, "name", None)}  # fmt: skip
    delivered = delivery.delivered_at(request)
    if delivered is not None:
        received = datetime.fromtimestamp(delivered, UTC)
        row["received_at"] = received
        published = delivery.published_at(request)
        if published is not None:  # the broker's publish time: the queue wait starts there
            row["sent_at"] = datetime.fromtimestamp(published, UTC)
        row["queue"] = (getattr(request, "delivery_info", None) or {}).get("routing_key")
        eta = getattr(request, "eta", None)
        detail = {"eta": str(eta)} if eta else None
        hold(task_id, event_row(task_id, lifecycle.RECEIVED, states.RECEIVED, worker, detail,
                                received))  # fmt: skip
    hold(task_id, event_row(task_id, lifecycle.STARTED, states.STARTED, worker, None, now), row)


def retry_eta(task_id: str) -> str | None:
    """The ETA (ISO 8601) of the message this task's retry just published, if it did."""
    with _lock:
        return _retry_etas.pop(task_id, None)


def _remember_retry(task_id: str, eta: str) -> None:
    running = current_task.request if current_task else None
    if running is None or running.id != task_id:
        return  # not a task retrying itself: another task or a client published it
    with _lock:
        _retry_etas[task_id] = eta
        while len(_retry_etas) > RETRY_ETAS_KEPT:
            _retry_etas.pop(next(iter(_retry_etas)))


def on_after_publish(headers: Any = None, routing_key: Any = None, **kwargs: Any) -> None:
    if not isinstance(headers, dict) or not headers.get("id"):
        return
    task_id = headers["id"]
    if headers.get("eta"):
        _remember_retry(task_id, headers["eta"])
    backend = _publishing.pop(task_id, None)
    if backend is None:  # its app does not record sent tasks
        return
    now = utcnow()
    row = {"task_id": task_id, "state": states.PENDING, "name": headers.get("task"),
           "queue": routing_key, "parent_id": headers.get("parent_id"),
           "root_id": headers.get("root_id"), "group_id": headers.get("group"),
           "sent_at": now, "updated_at": now}  # fmt: skip
    detail = {"eta": headers["eta"]} if headers.get("eta") else None
    backend.store.write(row, [event_row(task_id, lifecycle.SENT, states.PENDING, None, detail,
                                        now)])  # fmt: skip


def on_broker_events(events: list[lifecycle.MessageEvent]) -> None:
    """What the broker did in this process (dead-lettered, returned, rejected) joins the
    history with the next batch."""
    if _backend is None:
        return
    for event in events:
        if not event.task_id:
            continue
        at = datetime.fromtimestamp(event.at, UTC)
        detail = {"queue": event.queue, **event.detail}
        hold(event.task_id, event_row(event.task_id, event.event, None, event.worker, detail, at))


def current_backend() -> Any:
    return _backend


def install(backend: Any) -> None:
    """Connect the handlers (once per process; the newest backend instance is used)."""
    global _backend
    first = _backend is None
    _backend = backend
    if not first:
        return
    outage.connect(signals)
    signals.task_received.connect(on_task_received, weak=False, dispatch_uid="tq-received")
    signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="tq-prerun")
    signals.after_task_publish.connect(on_after_publish, weak=False, dispatch_uid="tq-sent")
    signals.worker_process_shutdown.connect(lambda **_: _flush_at_exit(), weak=False,
                                            dispatch_uid="tq-child-exit")  # fmt: skip
    signals.worker_shutdown.connect(lambda **_: _flush_at_exit(), weak=False,
                                    dispatch_uid="tq-worker-exit")  # fmt: skip
    lifecycle.subscribe(on_broker_events)
    atexit.register(_flush_at_exit)
    from .. import worker_metrics

    worker_metrics.connect()  # a worker on another broker may ask for its exporter too
