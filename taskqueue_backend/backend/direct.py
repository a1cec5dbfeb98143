"""A direct psycopg connection for the hot paths: the state write of every task (alone, or
several in one transaction), the read of a result (``AsyncResult.get()``) and the control
plane's read of one task (its result row and history).

One autocommit connection per process and thread, with the statements prepared on the server
(``prepare=True``), skips both SQLAlchemy's per-call work and PostgreSQL's planning of the
large CTE statement; writes committed together go in one round trip (pipeline mode). A broken
connection (database restart) is dropped, so the next call opens a fresh one; the ``Store``
decides whether and how a failed call is retried.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
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

    def execute_together(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        """Several statements in one transaction, sent together: one round trip and one
        commit for all (a failure of any rolls them all back)."""
        try:
            conn = self._connection()
            with conn.pipeline(), conn.transaction():
                for sql, params in calls:
                    conn.execute(sql, params, prepare=True)
        except psycopg.OperationalError:
            self._drop()
            raise

    def read(self, sql: str, params: dict[str, Any]) -> list[Any]:
        """The rows of one query, as named tuples (read by attribute, as SQLAlchemy's rows)."""
        try:
            cursor = self._connection().cursor(row_factory=namedtuple_row)
            return cursor.execute(sql, params, prepare=True).fetchall()
        except psycopg.OperationalError:
            self._drop()
            raise
