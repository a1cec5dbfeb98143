"""The worker's HTTP endpoint: ``/metrics`` (every pool process's samples added up, and the
main process's gauges), ``/healthz`` (the broker consumer's heartbeat is recent) and
``/readyz`` (that, and the result store answers: while it does not, the worker holds its tasks
instead of finishing them)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .. import worker_info
from .recording import WorkerCollector


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Scrapes and probes are not worth a log line each."""


def health() -> tuple[int, str]:
    """200 while this process's broker consumer heartbeats within its window."""
    beat, window = worker_info.LAST_BEAT, worker_info.HEARTBEAT_TIMEOUT
    if not worker_info.SELECTED:
        return 200, "ok: this worker does not use the taskqueue broker (no heartbeat to check)\n"
    if beat is None or window is None:
        return 503, "no broker heartbeat yet\n"
    silent = time.monotonic() - beat
    if silent > window:
        return 503, f"no broker heartbeat for {silent:.1f} s (window {window:g} s)\n"
    return 200, f"ok: last broker heartbeat {silent:.1f} s ago\n"


def result_store_problem() -> str | None:
    """Why this worker's result store (this package's backend) cannot be reached, or None
    (also when the worker uses another result backend)."""
    history = sys.modules.get("taskqueue_backend.backend.history")
    backend = history.current_backend() if history is not None else None
    return backend.store_problem() if backend is not None else None


def readiness() -> tuple[int, str]:
    """200 while the broker consumer heartbeats and the result store answers."""
    status, text = health()
    if status != 200:
        return status, text
    problem = result_store_problem()
    if problem is not None:
        return 503, f"result store unreachable: {problem}\n"
    return 200, "ok: broker heartbeat recent, result store reachable\n"


def application(metrics_app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    checks = {"/healthz": health, "/readyz": readiness}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        check = checks.get(environ.get("PATH_INFO") or "")
        if check is not None:
            status, text = check()
            start_response(f"{status} {'OK' if status == 200 else 'Service Unavailable'}",
                           [("Content-Type", "text/plain; charset=utf-8")])  # fmt: skip
            return [text.encode()]
        return metrics_app(environ, start_response)

    return app


def serve(address: str, port: int, directory: Path, hostname: str) -> WSGIServer:
    """Start serving in a daemon thread; ``shutdown()`` stops it."""
    from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    registry.register(WorkerCollector(hostname))  # type: ignore[arg-type]
    server = make_server(address, port, application(make_wsgi_app(registry)), _Server,
                         handler_class=_QuietHandler)  # fmt: skip
    threading.Thread(target=server.serve_forever, name="tq-worker-metrics", daemon=True).start()
    return server
