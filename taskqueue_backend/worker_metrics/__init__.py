"""Prometheus metrics of a Celery worker, served by the worker itself, and its liveness.

Enabled by configuration: ``taskqueue_worker_metrics_port`` in the app's configuration or
``TQ_WORKER_METRICS_PORT`` in the worker's environment (address: ``..._address`` /
``TQ_WORKER_METRICS_ADDRESS``, default ``0.0.0.0``). The worker's main process then serves
``/metrics`` and ``/healthz`` on that port (``server``):

- ``taskqueue_worker_tasks_total{task,state}`` (succeeded, failed, retried, revoked, rejected),
  ``taskqueue_worker_task_runtime_seconds{task}`` and ``taskqueue_worker_task_queue_wait_seconds
  {task}`` (published → started, from this package's broker), ``taskqueue_worker_task_
  redeliveries_total{task}`` (recorded where tasks run: ``recording``);
- ``taskqueue_worker_prefetched_tasks{worker}`` and ``taskqueue_worker_running_tasks{worker}``
  (read from the worker's main process at each scrape);
- ``/healthz``: 200 while this package's broker consumer heartbeats within its window, 503 once
  it does not (a probe that needs no ``celery inspect ping``).

Under the prefork pool every pool process writes its own samples in prometheus-client's
multiprocess mode and the main process adds them up. Their directory (``TQ_WORKER_METRICS_DIR``
or ``PROMETHEUS_MULTIPROC_DIR``, else a temporary one) is emptied at every worker start and a
temporary one is removed at shutdown (pool processes write only counters and histograms, whose
samples stay counted after a process exits; the gauges are read in the main process).
Connected when this package's transport or backend is selected (``connect``); nothing happens
in a worker that does not ask for it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PORT_SETTING, ADDRESS_SETTING = "taskqueue_worker_metrics_port", "taskqueue_worker_metrics_address"
PORT_ENV, ADDRESS_ENV, DIR_ENV = ("TQ_WORKER_METRICS_PORT", "TQ_WORKER_METRICS_ADDRESS",
                                  "TQ_WORKER_METRICS_DIR")  # fmt: skip
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_connected = False
_lock = threading.Lock()
_state: dict[str, Any] = {}  # the running exporter of this worker: server, directory


def connect() -> None:
    """Connect the worker signals (once per process; later calls do nothing)."""
    global _connected
    with _lock:
        if _connected:
            return
        _connected = True
    try:
        from celery import signals
    except ImportError:  # kombu used without Celery
        return
    from . import recording

    signals.worker_init.connect(on_worker_init, weak=False, dispatch_uid="tq-metrics-init")
    signals.worker_ready.connect(on_worker_ready, weak=False, dispatch_uid="tq-metrics-ready")
    signals.worker_shutdown.connect(on_worker_shutdown, weak=False,
                                    dispatch_uid="tq-metrics-shutdown")  # fmt: skip
    recording.connect(signals)


def configured_port(conf: Any) -> tuple[int, str] | None:
    """The (port, address) the exporter is asked to serve on, or None when it is off."""
    raw = os.environ.get(PORT_ENV) or (conf.get(PORT_SETTING) if conf is not None else None)
    if raw in (None, "", 0, "0"):
        return None
    try:
        port = int(raw)
    except (TypeError, ValueError):
        raise ValueError(
            f"{PORT_ENV} / {PORT_SETTING} must be a port number, got {raw!r}"
        ) from None
    if not 0 < port < 65536:
        raise ValueError(f"{PORT_ENV} / {PORT_SETTING} must be 1-65535, got {port}")
    address = os.environ.get(ADDRESS_ENV) or (conf.get(ADDRESS_SETTING) if conf else None)
    return port, str(address or "0.0.0.0")


def prepare_directory() -> Path:
    """The multiprocess directory, emptied (a worker start begins from zero), set in the
    environment before prometheus-client makes any metric, so pool processes inherit it."""
    given = os.environ.get(DIR_ENV) or os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        _state["temporary"] = False
    else:
        path = Path(tempfile.mkdtemp(prefix="tq-worker-metrics-"))
        _state["temporary"] = True
    os.environ[MULTIPROC_ENV] = str(path)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # in case it was imported before
    return path


def on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    app = getattr(sender, "app", None)
    wanted = configured_port(getattr(app, "conf", None))
    if wanted is None:
        return
    from . import recording

    _state["wanted"] = wanted
    _state["directory"] = prepare_directory()
    _state["hostname"] = str(getattr(sender, "hostname", "") or "")
    recording.enable()


def on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    """Serve once the worker is ready (its pool processes are running)."""
    if "wanted" not in _state or "server" in _state:
        return
    from .server import serve

    port, address = _state["wanted"]
    _state["server"] = serve(address, port, _state["directory"], _state["hostname"])
    logger.info("worker metrics on http://%s:%d/metrics (liveness: /healthz)", address, port)


def on_worker_shutdown(sender: Any = None, **kwargs: Any) -> None:
    server = _state.pop("server", None)
    if server is not None:
        server.shutdown()
        server.server_close()
    directory = _state.pop("directory", None)
    if directory is not None and _state.pop("temporary", False):
        shutil.rmtree(directory, ignore_errors=True)
    _state.pop("wanted", None)
