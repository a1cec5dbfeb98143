"""Opening the result store: the engine for this process, the tables, migrations on first use.

The result backend (in every worker and client) and the operations layer (CLI, control plane)
open the store the same way, from a database URL and the ``taskqueue_*`` settings. A process
that migrates on first use also makes the PostgreSQL history's partitions ahead (then checks
hourly, ``partitions.PartitionKeeper``): it has the rights to, and no row waits in the
default partition for an operator's ``taskqueue db maintain``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from sqlalchemy import Engine

from .engine import get_engine
from .migrate import upgrade
from .partitions import PartitionKeeper, Policy
from .queries import Store
from .schema import tables_for
from .settings import BackendSettings

_migrated: set[tuple[int, str, str, str | None]] = set()
_lock = threading.Lock()


def _options(url: str, settings: BackendSettings) -> tuple[tuple[tuple[str, Any], ...], dict]:
    options = settings.engine_options
    connect_args = dict(dict(options).get("connect_args") or {})
    if url.startswith("postgresql"):
        # an unreachable server fails a try within seconds instead of a TCP timeout's minutes
        connect_args.setdefault("connect_timeout", max(1, round(settings.connect_timeout)))
        if not settings.synchronous_commit:
            connect_args["options"] = "-c synchronous_commit=off"
        options = (*[o for o in options if o[0] != "connect_args"],
                   ("connect_args", connect_args))  # fmt: skip
    return options, connect_args


def engine_for(url: str, settings: BackendSettings) -> Engine:
    """This process's pooled engine for ``url`` with the settings' pool and options."""
    options, _ = _options(url, settings)
    return get_engine(url, settings.pool_size, settings.max_overflow, options)


def open_store(url: str, settings: BackendSettings, migrate: bool | None = None) -> Store:
    """A store over this process's engine; pending migrations are applied once per process
    and table set when ``migrate`` (default: ``settings.auto_migrate``)."""
    engine = engine_for(url, settings)
    _, connect_args = _options(url, settings)
    tables = tables_for(engine.dialect.name, settings.table_prefix, settings.schema)
    store = Store(engine, tables, connect_args, Policy.from_settings(settings))
    if settings.auto_migrate if migrate is None else migrate:
        key = (os.getpid(), url, settings.table_prefix, settings.schema)
        with _lock:
            if key not in _migrated:
                upgrade(engine, settings.table_prefix, settings.schema)
                if tables.partitioned:
                    PartitionKeeper(store.partitions).ensure()
                _migrated.add(key)
        if tables.partitioned:
            store.keeper = PartitionKeeper(store.partitions, checked=True)
    return store
