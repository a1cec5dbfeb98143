"""Capturing Celery's monitoring events (what Flower and ``celery events`` read)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from celery import Celery
from celery.events import EventReceiver

from tests.support.waiting import wait_for


class EventCollector:
    """An ``EventReceiver`` capturing every event in a background thread."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        self.connection = app.connection_for_read()
        self.receiver = EventReceiver(self.connection, handlers={"*": self.events.append}, app=app)
        self.thread = threading.Thread(
            target=self.receiver.capture, kwargs={"limit": None, "timeout": None}, daemon=True
        )

    def start(self, timeout: float = 20.0) -> EventCollector:
        """Start capturing; returns once the receiver is subscribed (it has seen an event of
        its own, sent until one arrives), so no event sent afterwards is missed."""
        self.thread.start()
        probe = uuid.uuid4().hex
        with self.app.events.default_dispatcher() as dispatcher:

            def seen() -> bool:
                dispatcher.send("test-probe", probe=probe)
                return any(e.get("probe") == probe for e in list(self.events))

            wait_for(seen, timeout=timeout, interval=0.1,
                     message=f"the event receiver did not subscribe in {timeout} s")  # fmt: skip
        return self

    def stop(self) -> None:
        self.receiver.should_stop = True
        self.thread.join(10)
        self.connection.release()

    def types_for(self, **match: Any) -> set[str]:
        return {
            e["type"]
            for e in list(self.events)
            if all(e.get(field) == value for field, value in match.items())
        }
