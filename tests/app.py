"""The Celery app test workers run (``celery -A tests.app worker``), configured only from the env.

Environment (set by the ``start_worker`` fixture):

- ``TQ_TEST_REDIS_URL``: broker URL; ``TQ_TEST_KEYPREFIX``: the test's key prefix.
- ``TQ_TEST_TRANSPORT_OPTIONS``: extra broker transport options as a JSON object.
- ``TQ_TEST_RECORD_URL``: the plain Redis the tasks record into, when the broker URL is not
  one (a ``sentinel://`` URL); default: the broker's.
- ``TQ_TEST_PREFETCH``: ``worker_prefetch_multiplier`` (default 4).
- ``TQ_TEST_ACKS_LATE``: "1" turns on ``task_acks_late``; ``TQ_TEST_ACKS_ON_FAILURE``: "0"
  turns off ``task_acks_on_failure_or_timeout``.
- ``TQ_TEST_DLQ_EXCLUDE``: queues (comma-separated) whose failed tasks are not dead-lettered.
- ``TQ_TEST_STOCK_BROKER``: "1" runs on kombu's own Redis transport instead (side-by-side tests).

Every task appends one JSON line to the Redis list ``<keyprefix>log``; ``read_log`` reads them
back. ``make_app`` builds a separate client-side app with the same tasks for publishing.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery, Task

from taskqueue_backend.headers import delivery_count
from taskqueue_backend.selection import DEFAULT_REDIS_URL, TRANSPORT_PATH
from tests.support.redis_service import client_for

TRANSPORT = TRANSPORT_PATH

_recorder: redis.Redis | None = None
_recorder_pid: int | None = None


def log_key(keyprefix: str) -> str:
    return f"{keyprefix}log"


def _env_redis_url() -> str:
    return os.environ.get("TQ_TEST_REDIS_URL", DEFAULT_REDIS_URL)


def _env_keyprefix() -> str:
    return os.environ.get("TQ_TEST_KEYPREFIX", "tqtest-unset:")


def _recorder_client() -> redis.Redis:
    """One plain Redis client per process, created on first use (after any fork)."""
    global _recorder, _recorder_pid
    if _recorder is None or _recorder_pid != os.getpid():
        _recorder = client_for(os.environ.get("TQ_TEST_RECORD_URL") or _env_redis_url())
        _recorder_pid = os.getpid()
    return _recorder


def _record(task: Task, label: str) -> None:
    delivery_info = task.request.delivery_info or {}
    entry = {
        "task": task.name,
        "label": label,
        "pid": os.getpid(),
        "t": time.time(),
        "delivery_count": delivery_count(task.request),
        "delivery_count_header": task.request.get("delivery_count"),
        "redelivered": delivery_info.get("redelivered"),
    }
    _recorder_client().rpush(log_key(_env_keyprefix()), json.dumps(entry))


def read_log(redis_client: redis.Redis, keyprefix: str) -> list[dict[str, Any]]:
    """Every entry the tasks recorded under ``keyprefix``, oldest first."""
    return [json.loads(raw) for raw in redis_client.lrange(log_key(keyprefix), 0, -1)]


def record(self: Task, label: str) -> None:
    _record(self, label)


def sleep_then_record(self: Task, label: str, seconds: float) -> None:
    time.sleep(seconds)
    _record(self, label)


def fail_then_record(self: Task, label: str, times: int, countdown: float = 1.0) -> None:
    """Retry (with ``countdown``) until it has been retried ``times`` times, then record."""
    if self.request.retries < times:
        raise self.retry(countdown=countdown, max_retries=times)
    _record(self, label)


def always_fail(self: Task, label: str) -> None:
    raise ValueError(f"always_fail({label!r}) fails on purpose")


TASKS = (record, sleep_then_record, fail_then_record, always_fail)


def configure(
    app: Celery, redis_url: str, keyprefix: str, transport_options: dict[str, Any],
    stock: bool = False,
) -> None:  # fmt: skip
    app.conf.update(
        broker_url=redis_url,
        broker_transport=None if stock else TRANSPORT,
        broker_transport_options={"global_keyprefix": keyprefix, **transport_options},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=int(os.environ.get("TQ_TEST_PREFETCH", "4")),
        task_acks_late=os.environ.get("TQ_TEST_ACKS_LATE") == "1",
        task_acks_on_failure_or_timeout=os.environ.get("TQ_TEST_ACKS_ON_FAILURE", "1") == "1",
        taskqueue_dead_letter_exclude_queues=[
            q for q in os.environ.get("TQ_TEST_DLQ_EXCLUDE", "").split(",") if q
        ],
    )
    for function in TASKS:
        # shared=False: do not attach these tasks to every other app created in this process.
        app.task(name=f"tests.app.{function.__name__}", bind=True, shared=False)(function)


def make_app(
    redis_url: str, keyprefix: str, stock: bool = False, **transport_options: Any
) -> Celery:
    """A fresh client-side app with the tasks and config of ``app``; close it when done.

    ``stock=True``: on kombu's own Redis transport, for side-by-side comparisons."""
    client = Celery("tests.app", set_as_current=False)
    configure(client, redis_url, keyprefix, transport_options, stock)
    return client


app = Celery("tests.app")
configure(
    app,
    _env_redis_url(),
    _env_keyprefix(),
    json.loads(os.environ.get("TQ_TEST_TRANSPORT_OPTIONS") or "{}"),
    stock=os.environ.get("TQ_TEST_STOCK_BROKER") == "1",
)


def kill_own_process(self: Task, label: str) -> None:
    """Record, then SIGKILL the process running the task: the worker itself under ``-P solo``."""
    import signal

    _record(self, label)
    os.kill(os.getpid(), signal.SIGKILL)


app.task(name="tests.app.kill_own_process", bind=True, shared=False)(kill_own_process)


# -- tasks for the fault tests ----------------------------------------------------------------

_log_clients: dict[tuple[int, str], redis.Redis] = {}


def sleep_then_record_to(self: Task, label: str, seconds: float, log_url: str) -> None:
    """``sleep_then_record`` logging to the Redis at ``log_url`` instead of the broker's.

    Fault tests stop and kill the broker's Redis; the log must not go down with it.
    """
    time.sleep(seconds)
    key = (os.getpid(), log_url)
    if key not in _log_clients:
        _log_clients[key] = client_for(log_url)
    delivery_info = self.request.delivery_info or {}
    entry = {
        "task": self.name,
        "label": label,
        "pid": os.getpid(),
        "t": time.time(),
        "delivery_count": delivery_count(self.request),
        "redelivered": delivery_info.get("redelivered"),
    }
    _log_clients[key].rpush(log_key(_env_keyprefix()), json.dumps(entry))


def reject_without_requeue(self: Task, label: str) -> None:
    """Reject its own message for good (registered with acks_late, which Reject needs)."""
    from celery.exceptions import Reject

    raise Reject(f"reject_without_requeue({label!r}) rejects its message on purpose", requeue=False)


app.task(name="tests.app.sleep_then_record_to", bind=True, shared=False)(sleep_then_record_to)
app.task(name="tests.app.reject_without_requeue", bind=True, shared=False, acks_late=True)(
    reject_without_requeue
)


def added_in_a_fix(self: Task, label: str) -> None:
    """Registered only when ``TQ_TEST_WITH_FIX=1``: a worker without it dead-letters the
    message as an unknown task; after the "deploy", a replay runs it."""
    _record(self, label)


if os.environ.get("TQ_TEST_WITH_FIX") == "1":
    app.task(name="tests.app.added_in_a_fix", bind=True, shared=False)(added_in_a_fix)


def retry_then_fail(self: Task, label: str) -> None:
    """Retry twice (max_retries=2), then fail for good."""
    raise self.retry(exc=RuntimeError(f"attempt {self.request.retries} of {label}"),
                     countdown=0.05)  # fmt: skip


def fail_without_dead_letter(self: Task, label: str) -> None:
    """Opted out of dead-lettering with the task option ``dead_letter=False``."""
    raise ValueError(f"{label}: nobody wants to keep this one")


app.task(name="tests.app.retry_then_fail", bind=True, shared=False, max_retries=2)(retry_then_fail)
app.task(name="tests.app.fail_without_dead_letter", bind=True, shared=False, dead_letter=False)(
    fail_without_dead_letter
)
