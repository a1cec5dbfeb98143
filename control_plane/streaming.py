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
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

from apiflask import abort
from flask import Response, request

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


class StreamSlots:
    """The event streams open in this process, by caller: each holds a server thread, so
    there are at most ``stream_limit`` of them (the other threads answer every other request,
    health checks included), and at most ``stream_limit_per_caller`` for one caller."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    def take(self, caller: str, settings: Settings) -> None:
        """One more stream for ``caller``, or 429 (with Retry-After) when none is left."""
        with self._lock:
            total = sum(self._open.values())
            mine = self._open.get(caller, 0)
            if total >= settings.stream_limit:
                why = f"this server holds its most open event streams ({settings.stream_limit})"
            elif mine >= settings.stream_limit_per_caller:
                why = (f"{caller} holds its most open event streams here "
                       f"({settings.stream_limit_per_caller}): close one")  # fmt: skip
            else:
                self._open[caller] = mine + 1
                return
        abort(429, f"{why}; try again later", headers={"Retry-After": str(RETRY_AFTER)})

    def give_back(self, caller: str) -> None:
        with self._lock:
            left = self._open.get(caller, 0) - 1
            if left > 0:
                self._open[caller] = left
            else:
                self._open.pop(caller, None)


SLOTS = StreamSlots()
#: seconds a refused stream is told to wait (also the browsers' reconnect delay)
RETRY_AFTER = 15
#: seconds between looks at whether a stream's client closed its connection
GONE_CHECK = 0.1


def client_socket(environ: dict[str, Any]) -> socket.socket | None:
    """The connection under a request, where the server shows it (gunicorn, Werkzeug)."""
    found = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    return found if isinstance(found, socket.socket) else None


def client_gone(sock: socket.socket | None) -> bool:
    """Whether the client closed ``sock`` (an orderly close reads as end of file). A TLS
    socket cannot be peeked at: its close is found at the next write instead."""
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


def stream_response(
    ops: Operations, after: int | None, settings: Settings, caller: str,
    max_seconds: float | None = None,
) -> Response:  # fmt: skip
    """The change feed after history id ``after`` as an open ``text/event-stream``, in one of
    ``caller``'s stream slots (429 when there is none)."""
    SLOTS.take(caller, settings)
    try:
        feed = ops.feed(after)
    except BaseException:
        SLOTS.give_back(caller)
        raise
    until = time.monotonic() + max_seconds if max_seconds else None
    sock = client_socket(request.environ)

    def pause(seconds: float) -> bool:
        """Wait for a change or ``seconds``; False when the client went away meanwhile, so
        its slot is free at once (a browser leaving a live page closes its stream)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if client_gone(sock):
                return False
            if feed.wait(min(left, GONE_CHECK)):
                break
        return not client_gone(sock)

    def events() -> Iterator[str]:
        try:
            yield "retry: 2000\n\n"
            beat = time.monotonic()
            while not STOPPING.is_set() and (until is None or time.monotonic() < until):
                changes = feed.poll()
                for change in changes:
                    yield event_text(change.kind, change.data, change.id)
                if time.monotonic() - beat >= settings.stream_heartbeat:
                    beat = time.monotonic()
                    yield ": heartbeat\n\n"
                elif not changes:
                    # a blank line (no event): a client that went away where its close
                    # cannot be seen (TLS) is found at the next write, not a heartbeat later
                    yield "\n"
                if not pause(min(settings.stream_poll, settings.stream_heartbeat)):
                    return
        finally:  # the stream ended, or its client went away (found at the next write)
            SLOTS.give_back(caller)

    return Response(events(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
