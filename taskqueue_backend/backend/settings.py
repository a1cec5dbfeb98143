"""Settings of the result backend, read from the Celery app's configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
        )
