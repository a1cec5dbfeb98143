"""Being woken when the history grows: ``LISTEN`` on the channel the history table's trigger
notifies (PostgreSQL; migration 0003), so live views read new rows at once instead of polling.

One listening connection (a daemon thread) serves every waiter of a result store. It
reconnects after the database went away; while it is not connected, waiters time out and
poll, so a live view is never stuck — only slower. SQLite has no notifications: there
``for_store`` returns None and callers poll.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)

#: the channel of migration 0003's trigger; the payload is the table's ``schema.name``
CHANNEL = "taskqueue_events"
RECONNECT_SECONDS = 2.0


class HistoryNotifications(threading.Thread):
    def __init__(self, conninfo: str, table: str, schema: str | None) -> None:
        super().__init__(name="tq-history-listener", daemon=True)
        self.conninfo = conninfo
        self.table, self.schema = table, schema
        #: grows by one for each notification about our table (and once on each reconnect)
        self.generation = 0
        self.connected = threading.Event()
        self._changed = threading.Condition()
        self._stopping = threading.Event()

    def ours(self, payload: str) -> bool:
        schema, _, table = payload.rpartition(".")
        return table == self.table and (self.schema is None or schema == self.schema)

    def wait(self, seen: int, timeout: float) -> int:
        """Until the generation differs from ``seen`` or ``timeout`` passed; the generation."""
        with self._changed:
            self._changed.wait_for(lambda: self.generation != seen, timeout)
            return self.generation

    def _bump(self) -> None:
        with self._changed:
            self.generation += 1
            self._changed.notify_all()

    def run(self) -> None:
        import psycopg

        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    self._bump()  # rows may have been written while we were not listening
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if self.ours(note.payload):
                                self._bump()
            except psycopg.Error as exc:
                if self.connected.is_set():
                    logger.warning("history notifications lost (%s); reconnecting", exc)
                self.connected.clear()
                self._stopping.wait(RECONNECT_SECONDS)

    def stop(self) -> None:
        self._stopping.set()


def for_store(store: Any) -> HistoryNotifications | None:
    """A started listener for ``store``'s history table, or None where there is none."""
    if store.dialect != "postgresql":
        return None
    events = store.tables.events
    conninfo = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    listener = HistoryNotifications(conninfo, events.name, events.schema)
    listener.start()
    return listener
