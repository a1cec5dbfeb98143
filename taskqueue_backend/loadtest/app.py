"""The Celery app a load test runs: one task, configured from environment variables.

The ``taskqueue loadtest`` command builds this app in its own process (to publish) and starts
stock ``celery -A taskqueue_backend.loadtest.worker_app worker`` processes (to consume) with
the same settings passed through the environment:

- ``TQ_LOADTEST_BROKER_URL``: the broker's ``redis://`` / ``rediss://`` URL;
- ``TQ_LOADTEST_TRANSPORT``: ``taskqueue`` (this package's transport) or ``stock`` (kombu's);
- ``TQ_LOADTEST_KEYPREFIX``: the run's key prefix: the broker's ``global_keyprefix`` and the
  prefix of the records list and the readiness set;
- ``TQ_LOADTEST_RESULT_BACKEND``: a Celery ``result_backend`` URL; empty: results are ignored;
- ``TQ_LOADTEST_RECORD_URL``: the Redis the records go to (default: the broker's);
- ``TQ_LOADTEST_QUEUE``: the queue (default ``loadtest``);
- ``TQ_LOADTEST_PREFETCH``: ``worker_prefetch_multiplier`` (default 4);
- ``TQ_LOADTEST_MAX_PRIORITY``: the highest priority used (this transport's ``max_priority``);
- ``TQ_LOADTEST_TRANSPORT_OPTIONS``: more ``broker_transport_options``, as a JSON object
  (e.g. ``master_name`` for a ``sentinel://`` list, ``heartbeat_timeout``);
- ``TQ_LOADTEST_ACKS_LATE``: ``1`` for ``task_acks_late`` (a task is acknowledged after it ran,
  so one running on a worker that dies runs again instead of being lost).

The task, ``taskqueue.loadtest.work(seq, duration, fail, priority, published_at)``, notes when
it started, sleeps ``duration`` seconds, then appends one JSON record ``{seq, priority, fail,
published_at, started_at, finished_at, pid}`` to the run's records list (RPUSH) and raises
``LoadtestFailure`` when ``fail`` is true (no retry). A result backend, when given, is the same
for both transports; a Redis one gets the run's prefix too, so its keys are cleaned with the
run's (rows a database backend wrote stay in that database, under the task's name).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from ..selection import TRANSPORT_PATH

TASK_NAME = "taskqueue.loadtest.work"
OURS = "taskqueue"
STOCK = "stock"
TRANSPORTS = (OURS, STOCK)
DEFAULT_QUEUE = "loadtest"
ENV_PREFIX = "TQ_LOADTEST_"


class LoadtestFailure(Exception):
    """Raised by a task published with ``fail=True``: the failure the load test asked for."""


@dataclass(frozen=True)
class LoadtestConfig:
    """Everything the app needs; the same in the publishing process and in the workers."""

    broker_url: str
    transport: str = OURS
    keyprefix: str = ""
    result_backend: str | None = None
    record_url: str | None = None
    queue: str = DEFAULT_QUEUE
    prefetch_multiplier: int = 4
    max_priority: int = 9
    #: publishing threads (sizes the producer pool); workers do not need it
    publishers: int = 1
    transport_options: Mapping[str, Any] = field(default_factory=dict)
    acks_late: bool = False
    #: Celery's ``task_publish_retry_policy`` for the publishing process (None: Celery's)
    publish_retry_policy: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {self.transport!r}")

    @property
    def records_key(self) -> str:
        """The Redis list every finished task appends its record to."""
        return f"{self.keyprefix}loadtest:records"

    @property
    def ready_key(self) -> str:
        """The Redis set each worker adds its pid to once it consumes."""
        return f"{self.keyprefix}loadtest:ready"

    @property
    def records_url(self) -> str:
        return self.record_url or self.broker_url

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``worker_app`` build this same configuration."""
        values = {
            "BROKER_URL": self.broker_url,
            "TRANSPORT": self.transport,
            "KEYPREFIX": self.keyprefix,
            "RESULT_BACKEND": self.result_backend or "",
            "RECORD_URL": self.record_url or "",
            "QUEUE": self.queue,
            "PREFETCH": str(self.prefetch_multiplier),
            "MAX_PRIORITY": str(self.max_priority),
            "TRANSPORT_OPTIONS": json.dumps(dict(self.transport_options)),
            "ACKS_LATE": "1" if self.acks_late else "",
        }
        return {ENV_PREFIX + name: value for name, value in values.items()}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LoadtestConfig:
        found = os.environ if env is None else env

        def get(name: str, default: str = "") -> str:
            return found.get(ENV_PREFIX + name) or default

        broker_url = get("BROKER_URL")
        if not broker_url:
            raise RuntimeError(
                f"{ENV_PREFIX}BROKER_URL is not set: this app is configured by "
                "`taskqueue loadtest`, which sets it for the workers it starts"
            )
        return cls(
            broker_url=broker_url,
            transport=get("TRANSPORT", OURS),
            keyprefix=get("KEYPREFIX"),
            result_backend=get("RESULT_BACKEND") or None,
            record_url=get("RECORD_URL") or None,
            queue=get("QUEUE", DEFAULT_QUEUE),
            prefetch_multiplier=int(get("PREFETCH", "4")),
            max_priority=int(get("MAX_PRIORITY", "9")),
            transport_options=json.loads(get("TRANSPORT_OPTIONS", "{}")),
            acks_late=get("ACKS_LATE") == "1",
        )


class Recorder:
    """One Redis client per process (a forked pool process makes its own) for the records."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: redis.Redis | None = None
        self._pid: int | None = None

    def client(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():
            self._client = redis.Redis.from_url(self.url)
            self._pid = os.getpid()
        return self._client


def is_redis_url(url: str) -> bool:
    """A URL a plain ``redis.Redis.from_url`` opens (the runs read and clean through one)."""
    return url.split("://", 1)[0] in ("redis", "rediss", "unix")


def redis_client(url: str, transport_options: Mapping[str, Any]) -> redis.Redis:
    """A plain client of the broker's Redis: ``url`` itself, or for a ``sentinel://`` list the
    primary the sentinels name for ``master_name`` (followed across failovers)."""
    if not url.startswith("sentinel://"):
        return redis.Redis.from_url(url)
    from redis.sentinel import Sentinel

    hosts = []
    for part in url.split(";"):
        address = part.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        host, _, port = address.rpartition(":")
        hosts.append((host or "127.0.0.1", int(port or 26379)))
    name = transport_options.get("master_name")
    if not name:
        raise ValueError("a sentinel:// broker URL needs master_name in the transport options")
    return Sentinel(hosts, socket_timeout=5).master_for(str(name), socket_timeout=30)


def make_app(config: LoadtestConfig) -> Celery:
    """A Celery app on ``config``'s broker with the load test's one task registered."""
    app = Celery("taskqueue_loadtest", set_as_current=False)
    transport_options: dict[str, Any] = {
        **config.transport_options,
        "global_keyprefix": config.keyprefix,
    }
    if config.transport == OURS:
        transport_options["max_priority"] = max(config.max_priority, 0)
    app.conf.update(
        broker_url=config.broker_url,
        broker_transport=TRANSPORT_PATH if config.transport == OURS else None,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_pool_limit=max(10, config.publishers + 2),
        task_default_queue=config.queue,
        task_ignore_result=config.result_backend is None,
        result_backend=config.result_backend,
        worker_prefetch_multiplier=config.prefetch_multiplier,
        task_acks_late=config.acks_late,
    )
    if config.publish_retry_policy is not None:
        app.conf.task_publish_retry_policy = dict(config.publish_retry_policy)
    if config.result_backend and is_redis_url(config.result_backend):
        app.conf.result_backend_transport_options = {"global_keyprefix": config.keyprefix}
    recorder = Recorder(config.records_url)
    records_key = config.records_key

    # throws: an expected failure is logged in one line, without a traceback to format
    @app.task(name=TASK_NAME, shared=False, max_retries=0, throws=(LoadtestFailure,))
    def work(
        seq: int, duration: float, fail: bool, priority: int = 0, published_at: float = 0.0
    ) -> int:
        """Sleep ``duration`` s, record when it ran, and fail when asked to."""
        started_at = time.time()
        if duration > 0:
            time.sleep(duration)
        finished_at = time.time()
        record = {
            "seq": seq, "priority": priority, "fail": bool(fail), "published_at": published_at,
            "started_at": started_at, "finished_at": finished_at, "pid": os.getpid(),
        }  # fmt: skip
        recorder.client().rpush(records_key, json.dumps(record))
        if fail:
            raise LoadtestFailure(f"load test task {seq} fails on purpose")
        return seq

    return app
