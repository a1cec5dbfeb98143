"""The app module the load test's workers run: ``celery -A taskqueue_backend.loadtest.worker_app
worker``.

Importing it builds the app from the ``TQ_LOADTEST_*`` environment (see
``taskqueue_backend.loadtest.app``) and connects one ``worker_ready`` handler that adds the
worker's pid to the run's readiness set, so the command publishes only once every worker
consumes. Only workers import this module; the command builds its app with ``make_app``.
"""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_ready

from .app import LoadtestConfig, Recorder, make_app

config = LoadtestConfig.from_env()
app = make_app(config)


def announce_ready(**_: Any) -> None:
    """Tell the command this worker consumes (Celery logs "ready." at the same moment)."""
    Recorder(config.records_url).client().sadd(config.ready_key, os.getpid())


worker_ready.connect(announce_ready, weak=False)
