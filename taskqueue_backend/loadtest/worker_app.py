"""The app module the load test's workers run: ``celery -A taskqueue_backend.loadtest.worker_app
worker``.

Its ``app`` is built on first access (Celery's ``-A`` reads it), not at import, from the
``TQ_LOADTEST_*`` environment (see ``taskqueue_backend.loadtest.app``); building it connects
one ``worker_ready`` handler that adds the worker's pid to the run's readiness set, so the
command publishes only once every worker consumes. Importing the module does nothing.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .app import LoadtestConfig, Recorder, make_app

_built: dict[str, Any] = {}
_lock = threading.Lock()


def build() -> Any:
    """The worker's app (made once), configured from the environment the command set."""
    with _lock:
        if "app" not in _built:
            from celery.signals import worker_ready

            config = LoadtestConfig.from_env()
            _built["config"] = config
            _built["app"] = make_app(config)
            worker_ready.connect(announce_ready, weak=False, dispatch_uid="tq-loadtest-ready")
        return _built["app"]


def announce_ready(**_: Any) -> None:
    """Tell the command this worker consumes (Celery logs "ready." at the same moment)."""
    config: LoadtestConfig = _built["config"]
    Recorder(config.records_url).client().sadd(config.ready_key, os.getpid())


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        return build()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
