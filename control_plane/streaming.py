"""Server-sent events of the operations layer's change feed, for ``/api/v1/stream`` (bearer
tokens) and the admin UI's live pages (the session cookie): one generator, two doors.

Each change is an SSE event — ``task`` (a history row; its id is the position a client resumes
from with ``Last-Event-ID``), ``worker`` and ``dlq`` — and a ``: heartbeat`` comment keeps idle
connections open through proxies. A stream ends when its server process begins a graceful
stop (``STOPPING``, set on SIGTERM by ``taskqueue control-plane``): clients reconnect, to
another process or replica, with ``Last-Event-ID``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Response

from taskqueue_backend.operations import Operations, to_json

from .settings import Settings

#: set when this process begins a graceful stop: open streams end within ``TQ_STREAM_POLL``
#: seconds instead of holding the server until its graceful timeout
STOPPING = threading.Event()


def event_text(kind: str, data: dict[str, Any], event_id: str | None) -> str:
    lines = [f"event: {kind}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(to_json(data), separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


def resume_position(last_event_id: str | None) -> int | None:
    """The history id a client saw last (``Last-Event-ID``), or None: from now on."""
    return int(last_event_id) if last_event_id and last_event_id.isdigit() else None


def stream_response(
    ops: Operations, after: int | None, settings: Settings, max_seconds: float | None = None
) -> Response:
    """The change feed after history id ``after`` as an open ``text/event-stream``."""
    feed = ops.feed(after)
    until = time.monotonic() + max_seconds if max_seconds else None

    def events() -> Iterator[str]:
        yield "retry: 2000\n\n"
        beat = time.monotonic()
        while not STOPPING.is_set() and (until is None or time.monotonic() < until):
            for change in feed.poll():
                yield event_text(change.kind, change.data, change.id)
            if time.monotonic() - beat >= settings.stream_heartbeat:
                beat = time.monotonic()
                yield ": heartbeat\n\n"
            feed.wait(min(settings.stream_poll, settings.stream_heartbeat))

    return Response(events(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
