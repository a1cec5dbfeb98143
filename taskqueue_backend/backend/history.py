"""Capturing every task's life from stock workers, by configuration only.

Celery calls the backend for state changes it stores (started when tracked, retried,
succeeded, failed, revoked); the rest comes from Celery signals and from the broker's
lifecycle notifications, all connected when the backend is loaded:

- ``received`` (worker main process, ``task_received``) and broker events (dead-lettered,
  returned after its worker died) are batched by a writer thread: one transaction per batch,
  never a database call on the worker's event loop;
- ``started`` (pool process, ``task_prerun``) waits for the task's next state write so a
  short task's whole history lands in one statement; a long task's ``started`` is written
  by the writer after ``taskqueue_history_flush_interval``;
- ``sent`` (publisher, ``after_task_publish``) only with ``taskqueue_record_sent = True``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from datetime import UTC, datetime
from typing import Any

from celery import signals, states

from .. import lifecycle
from . import deferred

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_pending: dict[str, list[dict[str, Any]]] = {}
_pending_rows: dict[str, dict[str, Any]] = {}
_backend: Any = None
_writer: Writer | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def event_row(
    task_id: str,
    event: str,
    state: str | None,
    worker: str | None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    return {"task_id": task_id, "event": event, "state": state, "at": at or utcnow(),
            "worker": worker, "detail": detail}  # fmt: skip


def take_pending(task_id: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Events (and the row update) of this task not written yet, for its state write."""
    with _lock:
        return _pending.pop(task_id, []), _pending_rows.pop(task_id, None)


_publishing: dict[str, Any] = {}


def publishing(task_id: str, backend: Any) -> None:
    """Remember which backend publishes this task (several apps may share a process)."""
    _publishing[task_id] = backend


def put_back(task_id: str, events: list[dict[str, Any]], row: dict[str, Any] | None) -> None:
    """Return what a failed write took, so the retried write (or the writer) has it."""
    with _lock:
        _pending.setdefault(task_id, [])[0:0] = events
        if row is not None:
            _pending_rows.setdefault(task_id, row)


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
        self.backend = backend
        self.pid = os.getpid()
        self.interval = backend.settings.history_flush_interval
        self._wake = threading.Event()
        self._stop_event = threading.Event()

    def poke(self) -> None:
        if not self.is_alive():
            self.start()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        with _lock:
            rows = dict(_pending_rows)
            events = [e for task_events in _pending.values() for e in task_events]
            _pending.clear()
            _pending_rows.clear()
        if not events and not rows:
            return
        try:
            self.backend.write_events(list(rows.values()), events)
        except Exception:
            logger.exception("could not write %d task history event(s); will retry", len(events))
            with _lock:  # keep them for the next round (or the task's next state write)
                for e in events:
                    _pending.setdefault(e["task_id"], []).insert(0, e)
                for task_id, row in rows.items():
                    _pending_rows.setdefault(task_id, row)

    def stop(self) -> None:
        self._stop_event.set()
        self.flush()


def writer() -> Writer:
    global _writer
    if _writer is None or _writer.pid != os.getpid():
        _writer = Writer(_backend)
    return _writer


def _flush_at_exit() -> None:
    deferred.stop()
    if _writer is not None and _writer.pid == os.getpid():
        _writer.stop()


# -- signal handlers ---------------------------------------------------------------------


def on_task_received(request: Any = None, **kwargs: Any) -> None:
    if request is None or _backend is None:
        return
    if (getattr(request, "request_dict", None) or {}).get("tq_delivered_at"):
        return  # delivered by this package's broker: the pool process records "received"
    now = utcnow()
    delivery = getattr(request, "delivery_info", None) or {}
    worker = getattr(request, "hostname", None)
    row = {
        "task_id": request.id,
        "state": states.RECEIVED,
        "name": getattr(request, "task_name", None) or getattr(request, "name", None),
        "worker": worker,
        "queue": delivery.get("routing_key"),
        "retries": getattr(request, "request_dict", {}).get("retries"),
        "parent_id": getattr(request, "parent_id", None),
        "root_id": getattr(request, "root_id", None),
        "group_id": getattr(request, "group_id", None),
        "received_at": now,
        "updated_at": now,
    }
    detail = {"eta": str(request.eta)} if getattr(request, "eta", None) else None
    hold(request.id, event_row(request.id, "received", states.RECEIVED, worker, detail, now), row)


def on_task_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    if not task_id or _backend is None:
        return
    now = utcnow()
    request = getattr(task, "request", None)
    worker = getattr(request, "hostname", None)
    row = {"task_id": task_id, "state": states.STARTED, "worker": worker, "started_at": now,
           "updated_at": now, "name": getattr(task, "name", None)}  # fmt: skip
    delivered = request.get("tq_delivered_at") if request is not None else None
    if delivered:
        received = datetime.fromtimestamp(float(delivered), UTC)
        row["received_at"] = received
        row["queue"] = (getattr(request, "delivery_info", None) or {}).get("routing_key")
        eta = getattr(request, "eta", None)
        detail = {"eta": str(eta)} if eta else None
        hold(task_id, event_row(task_id, "received", states.RECEIVED, worker, detail, received))
    hold(task_id, event_row(task_id, "started", states.STARTED, worker, None, now), row)


def on_after_publish(headers: Any = None, routing_key: Any = None, **kwargs: Any) -> None:
    if not isinstance(headers, dict) or not headers.get("id"):
        return
    task_id = headers["id"]
    backend = _publishing.pop(task_id, None)
    if backend is None:  # its app does not record sent tasks
        return
    if "x-tq-dead-letter" in headers:
        return  # a failed task stored as a dead letter (``transport.failures``), not sent
    now = utcnow()
    row = {"task_id": task_id, "state": states.PENDING, "name": headers.get("task"),
           "queue": routing_key, "parent_id": headers.get("parent_id"),
           "root_id": headers.get("root_id"), "group_id": headers.get("group"),
           "sent_at": now, "updated_at": now}  # fmt: skip
    detail = {"eta": headers["eta"]} if headers.get("eta") else None
    backend.store.write(row, [event_row(task_id, "sent", states.PENDING, None, detail, now)])


def on_broker_events(events: list[lifecycle.MessageEvent]) -> None:
    """Broker events join the history; a replay reopens its tasks before it returns."""
    if _backend is None:
        return
    reopened = []
    for event in events:
        if not event.task_id:
            continue
        at = datetime.fromtimestamp(event.at, UTC)
        detail = {"queue": event.queue, **event.detail}
        state = states.PENDING if event.event == "replayed" else None
        row = event_row(event.task_id, event.event, state, event.worker, detail, at)
        if event.event == "replayed":
            reopened.append(row)
        else:
            hold(event.task_id, row)
    if reopened:
        _backend.store.reopen(reopened, utcnow())


def current_backend() -> Any:
    return _backend


def install(backend: Any) -> None:
    """Connect the handlers (once per process; the newest backend instance is used)."""
    global _backend
    first = _backend is None
    _backend = backend
    if not first:
        return
    signals.task_received.connect(on_task_received, weak=False, dispatch_uid="tq-received")
    signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="tq-prerun")
    signals.after_task_publish.connect(on_after_publish, weak=False, dispatch_uid="tq-sent")
    signals.worker_process_shutdown.connect(lambda **_: _flush_at_exit(), weak=False,
                                            dispatch_uid="tq-child-exit")  # fmt: skip
    signals.worker_shutdown.connect(lambda **_: _flush_at_exit(), weak=False,
                                    dispatch_uid="tq-worker-exit")  # fmt: skip
    lifecycle.subscribe(on_broker_events)
    atexit.register(_flush_at_exit)
    from . import workers

    workers.install()
