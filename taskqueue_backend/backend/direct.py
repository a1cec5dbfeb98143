"""A direct psycopg connection for the hot path: the state write of every task.

One autocommit connection per process and thread, with the statement prepared on the server
(``prepare=True``), skips both SQLAlchemy's per-call work and PostgreSQL's planning of the
large CTE statement. A broken connection (database restart) is replaced once per call, and
the statement's retry variant runs on the new one (the first attempt may have committed);
beyond that the error reaches Celery, whose ``result_backend_always_retry`` applies.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import psycopg
from sqlalchemy import Engine


class DirectConnection:
    def __init__(self, engine: Engine, connect_options: dict[str, Any]) -> None:
        url = engine.url.set(drivername="postgresql")
        self.conninfo = url.render_as_string(hide_password=False)
        self.connect_options = connect_options
        self._local = threading.local()

    def _connection(self) -> psycopg.Connection[Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or self._local.pid != os.getpid():
            conn = psycopg.connect(self.conninfo, autocommit=True, **self.connect_options)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and self._local.pid == os.getpid():
            try:
                conn.close()
            except psycopg.Error:
                pass

    def execute(self, sql: str, params: dict[str, Any], retry_sql: str | None = None) -> None:
        """Run ``sql``; on a broken connection, run ``retry_sql`` (a variant safe to run after
        a failed attempt that may have committed) on a fresh one."""
        try:
            self._connection().execute(sql, params, prepare=True)
        except psycopg.OperationalError:
            self._drop()  # the server went away (restart): one fresh connection, then give up
            self._connection().execute(retry_sql or sql, params, prepare=True)
