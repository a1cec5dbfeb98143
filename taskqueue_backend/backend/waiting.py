"""``AsyncResult.get()`` and ``GroupResult.get()`` that wake when a result is stored.

On PostgreSQL each waiting thread keeps one ``LISTEN`` connection; a terminal state write
sends ``NOTIFY`` with the task id in the same statement, so a waiter wakes within
milliseconds instead of polling. SQLite (one machine, no notifications) polls briefly.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from celery import states
from celery.exceptions import TimeoutError

from .statements import NOTIFY_CHANNEL

SQLITE_POLL = 0.02
_local = threading.local()


class Listener:
    """A dedicated autocommit psycopg connection listening for completed results."""

    def __init__(self, conninfo: str) -> None:
        import psycopg

        self.pid = os.getpid()
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def wait(self, wanted: set[str], timeout: float) -> bool:
        """Block until a notification for one of ``wanted`` (True) or the timeout (False)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for note in self.conn.notifies(timeout=remaining, stop_after=1):
                if note.payload in wanted:
                    return True

    def close(self) -> None:
        self.conn.close()


def _listener(backend: Any) -> Listener:
    listener: Listener | None = getattr(_local, "listener", None)
    if listener is None or listener.pid != os.getpid() or listener.conn.closed:
        url = backend.store.engine.url.set(drivername="postgresql")
        listener = Listener(url.render_as_string(hide_password=False))
        _local.listener = listener
    return listener


def _waiter(backend: Any, interval: float) -> Callable[[set[str], float], None]:
    if backend.store.dialect != "postgresql":
        return lambda wanted, timeout: time.sleep(
            min(timeout, SQLITE_POLL, interval or SQLITE_POLL)
        )
    listener = _listener(backend)

    def wait(wanted: set[str], timeout: float) -> None:
        try:
            # a wake-up at least every second re-checks the table, so a lost connection
            # or a missed notification costs at most that
            listener.wait(wanted, min(timeout, 1.0))
        except Exception:
            _local.listener = None
            time.sleep(min(timeout, interval or 0.1))

    return wait


def _ready(meta: dict[str, Any], on_interval: Callable[[], None] | None) -> dict[str, Any]:
    """A finished result, after one last ``on_interval``: ``AsyncResult.get()`` passes its
    check of the parents' errors there, and a parent's error is what Celery raises first (a
    chord whose header failed raises what the header raised: the header's failure is committed
    before the chord's body is failed, so it is visible by now)."""
    if on_interval:
        on_interval()
    return dict(meta)


def wait_for_one(
    backend: Any,
    task_id: str,
    timeout: float | None,
    interval: float,
    on_interval: Callable[[], None] | None,
) -> dict[str, Any]:
    meta = backend.get_task_meta(task_id)
    if meta["status"] in states.READY_STATES:
        return _ready(meta, on_interval)
    wait = _waiter(backend, interval)  # LISTEN before the re-check: no lost wake-up
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        meta = backend.get_task_meta(task_id, cache=False)
        if meta["status"] in states.READY_STATES:
            return _ready(meta, on_interval)
        if on_interval:
            on_interval()
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError("The operation timed out.")
        wait({task_id}, 60.0 if remaining is None else remaining)


def wait_for_many(
    backend: Any,
    task_ids: list[str],
    timeout: float | None,
    interval: float,
    on_message: Callable[[Any], None] | None,
    on_interval: Callable[[], None] | None,
    max_iterations: int | None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    pending = set(task_ids)
    for task_id in list(pending):
        cached = backend._cache.get(task_id)
        if cached and cached["status"] in states.READY_STATES:
            pending.discard(task_id)
            yield task_id, cached
    wait = _waiter(backend, interval) if pending else None
    deadline = None if timeout is None else time.monotonic() + timeout
    iterations = 0
    while pending:
        for task_id, meta in backend.get_many_now(sorted(pending)).items():
            if meta["status"] in states.READY_STATES:
                pending.discard(task_id)
                if on_message is not None:
                    on_message(meta)
                yield task_id, meta
        if not pending:
            return
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError(f"Operation timed out ({timeout})")
        if on_interval:
            on_interval()
        assert wait is not None
        wait(pending, 60.0 if remaining is None else remaining)
        iterations += 1
        if max_iterations and iterations >= max_iterations:
            return
