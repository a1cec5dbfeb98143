"""One pooled SQLAlchemy engine per process and database, safe across prefork.

Celery's prefork pool forks after the parent may have connected; a child must never reuse
the parent's sockets, so engines are keyed by process id and a forked child builds its own
(the parent's pool is dropped in the child without closing the parent's connections).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool

_engines: dict[tuple[int, str, int, int, str], Engine] = {}
_lock = threading.Lock()
_SQLITE_BUSY_MS = 10_000


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


def _use_wal(cursor: Any) -> None:
    """Put the database file in WAL mode; the mode is stored in the file, so this switches once.

    Switching needs the file to itself, and SQLite answers "database is locked" at once, without
    waiting out busy_timeout, while another process (a worker, a client) is mid-transaction:
    retry until the busy deadline instead of failing that connection.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_MS / 1000
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchall()[0][0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _create(url: str, pool_size: int, max_overflow: int, options: dict[str, Any]) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, poolclass=NullPool, **options)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                # wait instead of failing on locks, then let readers proceed while a worker writes
                cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
                _use_wal(cursor)
            finally:
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
