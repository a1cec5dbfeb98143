"""One pooled SQLAlchemy engine per process and database, safe across prefork.

Celery's prefork pool forks after the parent may have connected; a child must never reuse
the parent's sockets, so engines are keyed by process id and a forked child builds its own
(the parent's pool is dropped in the child without closing the parent's connections).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool

_engines: dict[tuple[int, str, int, int, str], Engine] = {}
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    for engine in list(_engines.values()):
        engine.dispose(close=False)
    _engines.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def get_engine(
    url: str, pool_size: int = 5, max_overflow: int = 5, options: tuple[tuple[str, Any], ...] = ()
) -> Engine:
    key = (os.getpid(), url, pool_size, max_overflow, repr(options))
    engine = _engines.get(key)
    if engine is not None:
        return engine
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _create(url, pool_size, max_overflow, dict(options))
            _engines[key] = engine
    return engine


def _create(url: str, pool_size: int, max_overflow: int, options: dict[str, Any]) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, poolclass=NullPool, **options)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers proceed while a worker writes; wait instead of failing on locks
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

        return engine
    merged = {
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_pre_ping": True,  # survive a database restart
        "pool_recycle": 1800,
        **options,
    }
    return create_engine(url, **merged)
