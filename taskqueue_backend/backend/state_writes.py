"""Where a task's state write runs, and what happens when the result store does not answer.

- STARTED, written by the thread that runs the task, is the task's permission to run: it is
  retried for the whole window (``outage``). If it cannot be written the task does not run
  and its message goes back to its queue: Celery's reject returns a late-acknowledged
  message, and the broker puts back one that was acknowledged when the task started
  (``unrecorded.put_back``). Its history says ``returned`` instead of ``started``.
- The outcome (SUCCESS, FAILURE, REVOKED) written by the thread that runs the task: a
  late-acknowledged task waits for it within the window (its message is acknowledged only
  after it is written); a task acknowledged on start hands a SUCCESS to the writer thread
  (``deferred``), which retries it within the same window while the process goes on, and
  waits for a FAILURE (its dead letter comes next, and never before its recorded failure).
- Every other write of a worker (its main process reporting a lost or timed-out task, a
  revoked or expired one) goes to the writer thread: the worker's event loop never waits for
  the database.
- When the window runs out, the outcome goes to the broker's dead letters (reason
  ``result_store_unavailable``, the outcome in the detail: ``unrecorded.keep``); a
  late-acknowledged task the broker cannot keep goes back to its queue and runs again; a
  RETRY that cannot be written is only logged (the retry itself is already scheduled).
- Outside a worker (a client storing a state) a write is tried once more on a fresh
  connection, then the error is the caller's.

Celery reports a hard time limit twice for one delivery (the pool's error callback, then the
timeout handler, with the same request): the second, identical outcome is not written again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import states
from celery.exceptions import Reject
from celery.utils.saferepr import saferepr

from .. import lifecycle, unrecorded
from . import deferred, history, outage

if TYPE_CHECKING:
    from .backend import DatabaseBackend

logger = logging.getLogger(__name__)

#: terminal outcomes remembered per process to recognise Celery's second report of one
REMEMBERED = 1000
OUTCOME_REPR = 1024


class StateWrites:
    """The write policy of one result backend."""

    def __init__(self, backend: DatabaseBackend) -> None:
        self.backend = backend
        self._recorded: OrderedDict[str, tuple[str, weakref.ref[Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self._opened_in: int | None = None  # the process whose first deferred write opened it

    @property
    def window(self) -> float:
        return self.backend.settings.result_store_retry_window

    def run(
        self,
        task_id: str,
        state: str,
        row: dict[str, Any],
        events: list[dict[str, Any]],
        held: tuple[list[dict[str, Any]], dict[str, Any] | None],
        request: Any,
        result: Any,
    ) -> None:
        """Write ``row`` and ``events`` (``held``: the task's earlier events among them, and
        the row update they came with, handed back to the history writer when not written)."""
        running = outage.running_here(task_id)
        deadline = time.monotonic() + self.window

        handed_back: list[bool] = []

        def write() -> None:
            self.backend.store.write(row, events)

        def hand_back() -> None:  # the earlier events go back to the history writer, once
            if not handed_back:
                handed_back.append(True)
                history.put_back(task_id, *held)

        def give_up(exc: BaseException) -> None:
            hand_back()
            self._give_up(task_id, state, request, result, row, exc, running)

        try:
            if running and state == states.STARTED:
                self._start(task_id, write, request, held, deadline)
            elif self._may_defer(request, running, state):
                self._open_here()
                together = deferred.Together(self.backend, row, events)
                deferred.writer().submit(task_id, write, deadline, give_up, together)
            elif running or (request is not None and outage.in_worker()):
                try:
                    outage.retry_until(write, deadline, f"the {state} of task {task_id}")
                except Exception as exc:
                    if not outage.unreachable(exc):
                        raise
                    give_up(exc)
            else:
                write()  # a client's write: the store retries it once on a fresh connection
        except Reject:
            raise
        except Exception:
            hand_back()  # Celery may retry this write
            self.forget_outcome(task_id)
            raise

    # -- STARTED: the task runs only once it is recorded ----------------------------------

    def _start(
        self,
        task_id: str,
        write: Callable[[], None],
        request: Any,
        held: tuple[list[dict[str, Any]], dict[str, Any] | None],
        deadline: float,
    ) -> None:
        try:
            outage.retry_until(write, deadline, f"task {task_id}, not started until recorded")
            return
        except Exception as exc:
            if not outage.unreachable(exc):
                raise
            error = exc
        task = self._task(request)
        why = f"the result store was unreachable for {self.window:g} s ({outage.describe(error)})"
        acks_late = bool(getattr(task, "acks_late", False))
        item = unrecorded.Unrecorded(task, request, states.STARTED, "not started", error)
        if not acks_late and not unrecorded.put_back(item):
            logger.error("task %s was not started (%s) and its message, acknowledged already, "
                         "could not be put back: it is lost", task_id, why)  # fmt: skip
        else:
            logger.warning("task %s was not started: %s; its message goes back to its queue",
                           task_id, why)  # fmt: skip
        events, row = held
        kept = [e for e in events if e["event"] != lifecycle.STARTED]
        kept.append(history.returned_event(task_id, request, unrecorded.REASON, why))
        if row is not None:
            row = {**row, "state": states.PENDING, "started_at": None}
        history.put_back(task_id, kept, row)
        raise Reject(f"not started: {why}", requeue=True) from error

    # -- where the write runs -----------------------------------------------------------------

    def _may_defer(self, request: Any, running: bool, state: str = states.SUCCESS) -> bool:
        """Whether this write goes to the writer thread (see the module docstring)."""
        backend = self.backend
        if not backend.settings.deferred_writes or request is None:
            return False
        if deferred.on_writer_thread() or backend.dialect != "postgresql":
            return False  # SQLite: one writer at a time anyway, and no throughput target
        if getattr(request, "chord", None) or getattr(request, "is_eager", False):
            return False  # a chord counter moves only after its members are written
        if not running:
            return outage.in_worker()
        if state == states.FAILURE:
            return False  # its dead letter comes next: the failure is committed before it
        task = self._task(request)
        if task is None:
            return False
        late = getattr(task, "acks_late", None)  # Celery's tasks have it: conf only if not
        return not (backend.app.conf.task_acks_late if late is None else late)

    def _open_here(self) -> None:
        """Open the store (migrations checked) in this thread on its first deferred write, as
        a synchronous write would, so the writer thread's first write costs no more than the
        others; when the store does not answer, the writer retries it instead."""
        if self._opened_in == os.getpid():
            return
        self._opened_in = os.getpid()
        try:
            self.backend.store  # noqa: B018 - opening is the point
        except Exception as exc:
            if not outage.unreachable(exc):
                raise

    def _task(self, request: Any) -> Any:
        return self.backend.app.tasks.get(getattr(request, "task", None) or "")

    # -- when the window runs out ------------------------------------------------------------

    def _give_up(
        self,
        task_id: str,
        state: str,
        request: Any,
        result: Any,
        row: dict[str, Any],
        error: BaseException,
        running: bool,
    ) -> None:
        why = f"the result store was unreachable for {self.window:g} s ({outage.describe(error)})"
        self.forget_outcome(task_id)
        if state not in states.READY_STATES:
            logger.warning("the %s state of task %s was not recorded: %s", state, task_id, why)
            return
        task = self._task(request)
        outcome = _outcome(state, result, row)
        item = unrecorded.Unrecorded(task, request, state, outcome, error, row.get("traceback"))
        if task is not None and unrecorded.keep(item):
            logger.warning("task %s: its outcome was not recorded (%s); kept in the dead "
                           "letters with reason %s: %s", task_id, why, unrecorded.REASON,
                           outcome)  # fmt: skip
            return
        if running and getattr(task, "acks_late", False):
            logger.warning("task %s: its outcome was not recorded (%s) and could not be kept; "
                           "its message goes back to its queue to run again",
                           task_id, why)  # fmt: skip
            raise Reject(f"outcome not recorded: {why}", requeue=True) from error
        logger.error("task %s: its outcome was not recorded (%s) and could not be kept "
                     "anywhere: %s", task_id, why, outcome)  # fmt: skip

    # -- Celery's second report of one outcome ---------------------------------------------------

    def repeats_outcome(self, task_id: str, state: str, request: Any) -> bool:
        """Whether this terminal write repeats one already made for the same request."""
        if state not in states.READY_STATES or request is None:
            return False
        with self._lock:
            seen = self._recorded.get(task_id)
            if seen is not None and seen[0] == state and seen[1]() is request:
                return True
            try:
                self._recorded[task_id] = (state, weakref.ref(request))
            except TypeError:  # a request that cannot be referenced weakly: never deduplicated
                return False
            self._recorded.move_to_end(task_id)
            while len(self._recorded) > REMEMBERED:
                self._recorded.popitem(last=False)
        return False

    def forget_outcome(self, task_id: str) -> None:
        """A write that did not happen is not a first report."""
        with self._lock:
            self._recorded.pop(task_id, None)


def _outcome(state: str, result: Any, row: dict[str, Any]) -> str:
    """What the write would have recorded, for the dead letter's detail."""
    if state in states.EXCEPTION_STATES:
        return f"{state}: {row.get('exception_type')}: {row.get('exception_message')}"
    return f"{state}: {saferepr(result, OUTCOME_REPR)}"
