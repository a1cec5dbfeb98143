"""The Celery app for result-backend tests, configured only from the environment.

- ``TQ_TEST_REDIS_URL`` / ``TQ_TEST_KEYPREFIX``: the broker (this package's transport).
- ``TQ_TEST_RESULT_BACKEND``: e.g. ``tq+postgresql+psycopg://...`` or ``tq+sqlite:///...``.
- ``TQ_TEST_TABLE_PREFIX`` / ``TQ_TEST_DB_SCHEMA``: where the backend's tables live.
- ``TQ_TEST_TRACK_STARTED``: "1" turns on ``task_track_started``.
- ``TQ_TEST_ACKS_LATE``: "1" turns on ``task_acks_late``.
- ``TQ_TEST_ALWAYS_RETRY``: "1" turns on ``result_backend_always_retry`` (retry result writes
  while the database is unreachable).
- ``TQ_TEST_WORKER_HEARTBEAT``: ``taskqueue_worker_heartbeat`` in seconds.
- ``TQ_TEST_TRANSPORT_OPTIONS``: extra broker transport options as a JSON object.
- ``TQ_TEST_STOCK_BROKER``: "1" runs on kombu's own Redis transport instead (side-by-side tests
  of stock Celery, with ``TQ_TEST_RESULT_BACKEND`` naming Celery's stock ``redis://`` backend).
- ``TQ_TEST_EXTRA_CONF``: further settings as a JSON object, applied last, e.g.
  ``{"result_serializer": "pickle", "result_expires": 1}``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery, Task, signals

from tests.app import DEFAULT_REDIS_URL, TRANSPORT


def configure(app: Celery, env: dict[str, str] | os._Environ[str] = os.environ) -> Celery:
    app.conf.update(
        broker_url=env.get("TQ_TEST_REDIS_URL", DEFAULT_REDIS_URL),
        broker_transport=None if env.get("TQ_TEST_STOCK_BROKER") == "1" else TRANSPORT,
        broker_transport_options={"global_keyprefix": env.get("TQ_TEST_KEYPREFIX", "tqtest:")},
        result_backend=env.get("TQ_TEST_RESULT_BACKEND", "tq+sqlite:///results.db"),
        result_extended=True,
        taskqueue_table_prefix=env.get("TQ_TEST_TABLE_PREFIX", "tq_"),
        taskqueue_db_schema=env.get("TQ_TEST_DB_SCHEMA") or None,
        task_track_started=env.get("TQ_TEST_TRACK_STARTED") == "1",
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=int(env.get("TQ_TEST_PREFETCH", "4")),
    )
    extra_options = json.loads(env.get("TQ_TEST_TRANSPORT_OPTIONS") or "{}")
    app.conf.broker_transport_options.update(extra_options)
    if env.get("TQ_TEST_ACKS_LATE") == "1":
        app.conf.task_acks_late = True
    if env.get("TQ_TEST_ALWAYS_RETRY") == "1":
        app.conf.update(result_backend_always_retry=True,
                        result_backend_max_sleep_between_retries_ms=1000)  # fmt: skip
    if env.get("TQ_TEST_WORKER_HEARTBEAT"):
        app.conf.taskqueue_worker_heartbeat = float(env["TQ_TEST_WORKER_HEARTBEAT"])
    app.conf.update(json.loads(env.get("TQ_TEST_EXTRA_CONF") or "{}"))
    return app


def register(app: Celery) -> None:
    @app.task(name="bk.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="bk.tsum", shared=False)
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="bk.fail", shared=False)
    def fail(message: str) -> None:
        raise ValueError(message)

    @app.task(name="bk.fail_after", shared=False)
    def fail_after(seconds: float, message: str) -> None:
        time.sleep(seconds)
        raise ValueError(message)

    @app.task(name="bk.sleep", shared=False)
    def sleep(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @app.task(name="bk.retry_twice", bind=True, shared=False, max_retries=5)
    def retry_twice(self: Task, countdown: float = 0.5) -> int:
        if self.request.retries < 2:
            raise self.retry(exc=RuntimeError(f"attempt {self.request.retries}"),
                             countdown=countdown)  # fmt: skip
        return self.request.retries

    @app.task(name="bk.retry_recorded_late", bind=True, shared=False, max_retries=5)
    def retry_recorded_late(self: Task) -> int:
        """Retries once; its retry's publish is slowed down (``_slow_retry_publish``), so Celery
        stores RETRY well after the retry's message got its ETA."""
        if self.request.retries < 1:
            raise self.retry(exc=RuntimeError("once more"), countdown=RETRY_COUNTDOWN)
        return self.request.retries

    @app.task(name="bk.unserializable", shared=False)
    def unserializable() -> Any:
        return object()

    @app.task(name="bk.echo_size", shared=False)
    def echo_size(blob: str) -> int:
        return len(blob)

    @app.task(name="bk.bad_traceback", shared=False)
    def bad_traceback() -> None:
        raise ValueError("bytes \udcff and NUL \x00 in the message")

    @app.task(name="bk.stamp", shared=False)
    def stamp(seconds: float = 0.0) -> float:
        """Sleep, then return the wall-clock time at the task's very end."""
        time.sleep(seconds)
        return time.time()

    @app.task(name="bk.reject", shared=False, acks_late=True)
    def reject(reason: str) -> None:
        """Reject its own message for good: the broker dead-letters it."""
        from celery.exceptions import Reject

        raise Reject(reason, requeue=False)

    @app.task(name="bk.reject_until_fixed", shared=False, acks_late=True)
    def reject_until_fixed(flag_key: str) -> str:
        """Reject its message for good until the Redis key ``flag_key`` exists (the "fix")."""
        import redis
        from celery.exceptions import Reject

        client = redis.Redis.from_url(
            os.environ.get("TQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
        )
        try:
            if not client.exists(flag_key):
                raise Reject(f"{flag_key} is not set yet", requeue=False)
        finally:
            client.close()
        return "fixed"

    @app.task(name="bk.fail_until_fixed", shared=False)
    def fail_until_fixed(flag_key: str) -> str:
        """Raise until the Redis key ``flag_key`` exists (the "fix"), then succeed."""
        import redis

        client = redis.Redis.from_url(
            os.environ.get("TQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
        )
        try:
            if not client.exists(flag_key):
                raise ValueError(f"{flag_key} is not set yet")
        finally:
            client.close()
        return "fixed"

    @app.task(name="bk.record_run", bind=True, shared=False)
    def record_run(self: Task, seq: int, seconds: float = 0.0) -> int:
        """Sleep, then append ``{seq, start, end, pid}`` to the Redis list ``<keyprefix>runs``
        (every run counts, a repeated one too)."""
        start = time.time()
        time.sleep(seconds)
        entry = {"seq": seq, "start": start, "end": time.time(), "pid": os.getpid()}
        prefix = os.environ.get("TQ_TEST_KEYPREFIX", "tqtest:")
        _runs_client().rpush(runs_key(prefix), json.dumps(entry))
        return seq

    @app.task(name="bk.in_worker", shared=False)
    def in_worker() -> bool:
        """Whether the process running it knows it is a worker's (its writes then never wait
        on the event loop): under ``-P threads`` that is the worker's main process."""
        from taskqueue_backend.backend import outage

        return outage.in_worker()

    @app.task(name="bk.as_set", shared=False)
    def as_set(values: list[int]) -> set[int]:
        """A result only a serializer such as pickle keeps as a set."""
        return set(values)


_runs: dict[int, Any] = {}


def runs_key(keyprefix: str) -> str:
    return f"{keyprefix}runs"


def read_runs(client: Any, keyprefix: str) -> list[dict[str, Any]]:
    """Every run ``bk.record_run`` recorded under ``keyprefix``, oldest first."""
    return [json.loads(raw) for raw in client.lrange(runs_key(keyprefix), 0, -1)]


def _runs_client() -> Any:
    """One Redis client per process (after any fork) on the broker's Redis."""
    import redis

    if os.getpid() not in _runs:
        _runs[os.getpid()] = redis.Redis.from_url(
            os.environ.get("TQ_TEST_REDIS_URL", DEFAULT_REDIS_URL)
        )
    return _runs[os.getpid()]


#: the countdown of ``bk.retry_recorded_late`` and how long its retry's publish is held up
RETRY_COUNTDOWN = 0.5
RETRY_PUBLISH_DELAY = 0.3


@signals.after_task_publish.connect
def _slow_retry_publish(headers: Any = None, **kwargs: Any) -> None:
    if isinstance(headers, dict) and headers.get("task") == "bk.retry_recorded_late":
        if headers.get("retries"):
            time.sleep(RETRY_PUBLISH_DELAY)  # between the publish and Celery's RETRY write


def make_app(env: dict[str, str]) -> Celery:
    """A client app (same tasks and settings) for publishing and reading results."""
    app = configure(Celery("tests-backend-client", set_as_current=False), env)
    register(app)
    return app


app = configure(Celery("tests-backend"))
register(app)
