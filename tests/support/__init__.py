"""Helpers shared by the tests: real Redis discovery, condition waiting, worker subprocesses,
browser pages."""

from taskqueue_backend.selection import DEFAULT_REDIS_URL
from tests.support.browser import BrowserPage, OpenBrowserPage
from tests.support.operations import operations_for
from tests.support.redis_service import client_for, delete_keys_containing, ping_error
from tests.support.waiting import wait_for
from tests.support.workers import REPO_ROOT, StartWorker, WorkerProcess, worker_command

__all__ = [
    "BrowserPage",
    "DEFAULT_REDIS_URL",
    "OpenBrowserPage",
    "REPO_ROOT",
    "StartWorker",
    "WorkerProcess",
    "client_for",
    "delete_keys_containing",
    "operations_for",
    "ping_error",
    "wait_for",
    "worker_command",
]
