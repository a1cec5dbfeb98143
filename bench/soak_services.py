"""The servers a soak run starts for itself and what it reads from them.

- the broker: a ``SentinelSet`` (a primary, its replica, three sentinels) under the run's
  folder; workers and the publisher reach it through its ``sentinel://`` list;
- the records: a plain ``redis-server`` of its own, so the records of a million tasks neither
  weigh on the broker's memory figures nor fail over with it;
- the result store: a fresh PostgreSQL database (``SoakDatabase``) on the server of
  ``TQ_SOAK_DATABASE_URL`` (else ``DATABASE_URL``, else the test database's server:
  ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), dropped at the end.

``redis_memory`` and ``keys_under`` read a broker server's memory and the run's keys;
``SoakDatabase.sizes`` the result tables' sizes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import redis
import sqlalchemy
from sqlalchemy.engine import make_url

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TABLES = ("tq_results", "tq_task_events")


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_memory(port: int) -> dict[str, Any]:
    """``used_memory``, ``used_memory_dataset`` (without the server's overhead: client and
    replication buffers, the replication backlog, the script cache, the key tables), the key
    count, the clients and pub/sub channels (their tables count as dataset), and ``MEMORY
    STATS`` whole."""
    client = redis.Redis(port=port, socket_timeout=10)
    try:
        info: Any = client.info("memory")
        clients: Any = client.info("clients")
        stats: Any = client.execute_command("MEMORY STATS")
        channels = client.pubsub_numpat() + len(client.pubsub_channels())
        return {
            "used_memory": int(info["used_memory"]),
            "used_memory_dataset": int(info["used_memory_dataset"]),
            "keys": int(client.dbsize()),
            "connected_clients": int(clients["connected_clients"]),
            "pubsub_channels_and_patterns": int(channels),
            "memory_stats": _plain(stats),
        }
    finally:
        client.close()


def _plain(value: Any) -> Any:
    """``MEMORY STATS``' flat [name, value, ...] reply (nested for db.N) as a dict."""
    if (
        isinstance(value, list)
        and len(value) % 2 == 0
        and all(isinstance(k, (bytes, str)) for k in value[::2])
    ):
        return {as_text(k): _plain(v) for k, v in zip(value[::2], value[1::2], strict=True)}
    if isinstance(value, dict):
        return {as_text(k): _plain(v) for k, v in value.items()}
    return as_text(value) if isinstance(value, bytes) else value


def keys_under(port: int, prefix: str) -> dict[str, int]:
    """Every key whose name starts with ``prefix`` on the server at ``port``, with the bytes
    it takes (``MEMORY USAGE``, its name and value with their overhead)."""
    client = redis.Redis(port=port, socket_timeout=10)
    pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix) + "*"
    try:
        return {as_text(key): int(client.memory_usage(key, samples=0) or 0)
                for key in client.scan_iter(match=pattern, count=1000)}  # fmt: skip
    finally:
        client.close()


@dataclass
class SoakDatabase:
    """A database of the run's own on the server of ``admin_url``: created, then dropped."""

    admin_url: str
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"tq_soak_{uuid.uuid4().hex[:10]}"
        self._admin = sqlalchemy.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")

    @classmethod
    def from_env(cls) -> SoakDatabase:
        found = os.environ.get("TQ_SOAK_DATABASE_URL") or os.environ.get("DATABASE_URL")
        return cls(found or DEFAULT_DATABASE_URL)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the run's database (password included)."""
        return make_url(self.admin_url).set(database=self.name).render_as_string(False)

    @property
    def result_backend(self) -> str:
        return "tq+" + self.url

    def create(self) -> None:
        """Create the database, then migrate it with ``taskqueue db upgrade`` (which also makes
        the history's partitions ahead), as a deployment does before its workers start."""
        with self._admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        command = [sys.executable, "-c", "from taskqueue_backend.cli import main; main()",
                   "--database-url", self.url, "db", "upgrade"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"taskqueue db upgrade failed: {done.stdout}{done.stderr}")

    def drop(self) -> None:
        with self._admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin.dispose()

    def _query(self, sql: str, **params: Any) -> list[Any]:
        engine = sqlalchemy.create_engine(self.url)
        try:
            with engine.connect() as connection:
                return list(connection.execute(sqlalchemy.text(sql), params))
        finally:
            engine.dispose()

    def sizes(self) -> dict[str, dict[str, int]]:
        """Per table: total (heap, TOAST and indexes), heap, indexes (bytes), rows, dead rows."""
        found: dict[str, dict[str, int]] = {}
        for table in TABLES:
            # a partitioned table (the history on PostgreSQL) holds nothing itself: its
            # partitions (the leaves of its tree) do
            row = self._query(
                "WITH parts AS (SELECT c.oid AS relid FROM pg_class c "
                "WHERE c.oid = CAST(:table AS regclass) AND c.relkind = 'r' UNION "
                "SELECT relid FROM pg_partition_tree(CAST(:table AS regclass)) WHERE isleaf) "
                "SELECT count(*), coalesce(sum(pg_total_relation_size(t.relid)), 0), "
                "coalesce(sum(pg_relation_size(t.relid)), 0), "
                "coalesce(sum(pg_indexes_size(t.relid)), 0), coalesce(sum(s.n_live_tup), 0), "
                "coalesce(sum(s.n_dead_tup), 0) FROM parts t "
                "LEFT JOIN pg_stat_user_tables s ON s.relid = t.relid",
                table=table,
            )
            if row:
                partitions, total, heap, indexes, live, dead = (int(v) for v in row[0])
                count = int(self._query(f'SELECT count(*) FROM "{table}"')[0][0])
                found[table] = {"partitions": partitions, "total_bytes": total, "heap_bytes": heap,
                                "index_bytes": indexes, "rows": count, "live_rows": live,
                                "dead_rows": dead}  # fmt: skip
        return found

    def returned(self, task_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
        """Of ``task_ids``, those the broker's recovery returned to their queue (a history
        ``returned`` event): the consumers they were taken from, and when (epoch s)."""
        if not task_ids:
            return {}
        rows = self._query(
            "SELECT task_id, detail, extract(epoch FROM at) FROM tq_task_events "
            "WHERE event = 'returned' AND task_id = ANY(:ids)",
            ids=task_ids,
        )
        found: dict[str, list[tuple[str, float]]] = {}
        for task_id, detail, at in rows:
            consumer = str((detail or {}).get("from_consumer"))
            found.setdefault(task_id, []).append((consumer, float(at)))
        return found
