"""Settings of the result backend, read from the Celery app's configuration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .periods import Period
from .schema import DEFAULT_PREFIX


@dataclass(frozen=True)
class BackendSettings:
    """``taskqueue_*`` settings (all optional) plus the stock ones the backend honours.

    - ``taskqueue_table_prefix`` (``tq_``) and ``taskqueue_db_schema`` (none): where the
      tables live, so several apps can share a database.
    - ``taskqueue_auto_migrate`` (True): apply pending migrations on first use.
    - ``taskqueue_record_sent`` (False): write a "sent" history row (and a PENDING result)
      at publish time; this costs ``apply_async`` one database round trip per message.
    - ``taskqueue_pool_size`` (5) / ``taskqueue_max_overflow`` (5): the engine's pool bounds;
      ``database_engine_options`` is merged in as with Celery's database backend.
    - ``taskqueue_max_args_bytes`` (65536): larger encoded args/kwargs are stored as a
      truncation marker (the task still runs and its state is recorded).
    - ``taskqueue_history_flush_interval`` (0.2 s): how long events may wait to be written
      in a batch when no state change carries them.
    - ``taskqueue_synchronous_commit`` (True): on PostgreSQL, False sets the session's
      ``synchronous_commit = off``: results are visible at once and survive a clean restart,
      but a crash of the database server may lose the last fraction of a second of writes
      (about the durability of Redis with ``appendfsync everysec``), for more throughput.
    - ``taskqueue_deferred_writes`` (True): the outcome of a task acknowledged on start is
      written by a thread of its process instead of being waited for (``deferred``).
    - ``taskqueue_result_store_retry_window`` (120 s): how long a worker retries a state write
      while the result store is unreachable before it hands the task to the broker
      (``state_writes``).
    - ``taskqueue_connect_timeout`` (10 s): how long opening a PostgreSQL connection may take
      (``connect_timeout``), so an unreachable server fails a try instead of hanging it.
    - ``taskqueue_history_partition`` (``daily``; ``weekly``, ``monthly``): how much time one
      partition of the PostgreSQL history holds (``partitions``).
    - ``taskqueue_history_partitions_ahead`` (7): partitions made ahead of the current one.
    - ``taskqueue_history_retention`` (none: kept for ever): a timedelta or seconds; history
      partitions wholly older than this are dropped by ``taskqueue db maintain`` and Celery's
      ``backend_cleanup`` (on SQLite, older rows are deleted in batches).
    - ``taskqueue_cleanup_batch_size`` (1000): rows deleted per transaction by result expiry
      (``result_expires``) and by retention outside whole partitions.
    """

    table_prefix: str = DEFAULT_PREFIX
    schema: str | None = None
    auto_migrate: bool = True
    record_sent: bool = False
    pool_size: int = 5
    max_overflow: int = 5
    engine_options: tuple[tuple[str, Any], ...] = ()
    max_args_bytes: int = 65536
    history_flush_interval: float = 0.2
    synchronous_commit: bool = True
    deferred_writes: bool = True
    result_store_retry_window: float = 120.0
    connect_timeout: float = 10.0
    history_partition: str = "daily"
    history_partitions_ahead: int = 7
    history_retention: float | None = None  # seconds
    cleanup_batch_size: int = 1000

    @classmethod
    def from_conf(cls, conf: Any) -> BackendSettings:
        def get(name: str, default: Any) -> Any:
            value = conf.get(name)
            return default if value is None else value

        return cls(
            table_prefix=str(get("taskqueue_table_prefix", DEFAULT_PREFIX)),
            schema=get("taskqueue_db_schema", None),
            auto_migrate=bool(get("taskqueue_auto_migrate", True)),
            record_sent=bool(get("taskqueue_record_sent", False)),
            pool_size=int(get("taskqueue_pool_size", 5)),
            max_overflow=int(get("taskqueue_max_overflow", 5)),
            engine_options=tuple(sorted((get("database_engine_options", None) or {}).items())),
            max_args_bytes=int(get("taskqueue_max_args_bytes", 65536)),
            history_flush_interval=float(get("taskqueue_history_flush_interval", 0.2)),
            synchronous_commit=bool(get("taskqueue_synchronous_commit", True)),
            deferred_writes=bool(get("taskqueue_deferred_writes", True)),
            result_store_retry_window=float(get("taskqueue_result_store_retry_window", 120.0)),
            connect_timeout=float(get("taskqueue_connect_timeout", 10.0)),
            history_partition=Period.parse(get("taskqueue_history_partition", "daily")).value,
            history_partitions_ahead=_at_least(
                "taskqueue_history_partitions_ahead",
                get("taskqueue_history_partitions_ahead", 7),
                0,
            ),
            history_retention=seconds(get("taskqueue_history_retention", None)),
            cleanup_batch_size=_at_least(
                "taskqueue_cleanup_batch_size", get("taskqueue_cleanup_batch_size", 1000), 1
            ),
        )


def seconds(value: Any) -> float | None:
    """A duration setting (a timedelta or seconds) in seconds; None stays None."""
    if value is None:
        return None
    found = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if found <= 0:
        raise ValueError(f"taskqueue_history_retention must be positive, got {value!r}")
    return found


def _at_least(name: str, value: Any, low: int) -> int:
    number = int(value)
    if number < low:
        raise ValueError(f"{name} must be at least {low}, got {value!r}")
    return number
