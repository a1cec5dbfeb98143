"""A direct psycopg connection for the hot path: the state write of every task.

One autocommit connection per process and thread, with the statement prepared on the server
(``prepare=True``), skips both SQLAlchemy's per-call work and PostgreSQL's planning of the
large CTE statement. A broken connection (database restart) is dropped, so the next call
opens a fresh one; the ``Store`` decides whether and how a failed write is retried.
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

    def execute(self, sql: str, params: dict[str, Any]) -> None:
        try:
            self._connection().execute(sql, params, prepare=True)
        except psycopg.OperationalError:
            self._drop()  # the server went away (restart): the next call connects afresh
            raise
