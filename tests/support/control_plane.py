"""The control plane as the tests use it, with one token per role, on the test's own broker
prefix and result store:

- ``Api`` / ``make_api``: the real app in this process (Flask test client);
- ``ServedControlPlane``: the production server, ``taskqueue control-plane`` (gunicorn), as a
  subprocess on a free port, for HTTP clients and browsers.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests
from apiflask import APIFlask
from flask.testing import FlaskClient

from control_plane import create_app
from control_plane.auth import ROLES, new_token
from control_plane.context import backends
from control_plane.settings import Settings
from taskqueue_backend.embedded import free_port
from tests.support.waiting import wait_for
from tests.support.workers import REPO_ROOT, STOP_GRACE_SECONDS

TASKQUEUE = Path(sys.executable).parent / "taskqueue"


@dataclass
class Api:
    """One app and a way to call it as each role (``as_role("operator").post(...)``)."""

    app: APIFlask
    tokens: dict[str, str]
    settings: Settings
    clients: dict[str, FlaskClient] = field(default_factory=dict)

    def headers(self, role: str | None, **extra: str) -> dict[str, str]:
        found = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return {**found, **extra}

    def call(self, method: str, path: str, role: str | None = "admin", **kwargs: Any) -> Any:
        headers = {**self.headers(role), **kwargs.pop("headers", {})}
        client = self.app.test_client()
        return client.open(path, method=method, headers=headers, **kwargs)

    def get(self, path: str, role: str | None = "viewer", **kwargs: Any) -> Any:
        return self.call("GET", path, role, **kwargs)

    def post(
        self, path: str, json: Any = None, role: str | None = "operator", **kwargs: Any
    ) -> Any:
        return self.call("POST", path, role, json={} if json is None else json, **kwargs)

    def delete(self, path: str, role: str | None = "admin", **kwargs: Any) -> Any:
        return self.call("DELETE", path, role, **kwargs)

    @property
    def ops(self) -> Any:
        return backends(self.app).ops()


def tokens_for_roles() -> tuple[dict[str, str], str]:
    tokens, entries = {}, []
    for role in ROLES:
        token, entry = new_token(f"{role}-user", role)
        tokens[role] = token
        entries.append(entry)
    return tokens, ",".join(entries)


def make_api(
    redis_url: str, keyprefix: str, database_url: str | None, schema: str | None = None,
    **settings: Any,
) -> Iterator[Api]:  # fmt: skip
    tokens, entries = tokens_for_roles()
    found = Settings(broker_url=redis_url, broker_keyprefix=keyprefix, database_url=database_url,
                     db_schema=schema, api_tokens=entries, **settings)  # fmt: skip
    app = create_app(found)
    api = Api(app, tokens, found)
    yield api
    backends(app).close()


def served_settings(api_env: Mapping[str, str], **settings: str) -> dict[str, str]:
    """The ``TQ_*`` environment of a server on ``api_env``'s broker prefix and result store
    (see the ``api_env`` fixture), with further ``settings`` (``TQ_STREAM_POLL="5"``...)."""
    return {
        "TQ_BROKER_URL": api_env["TQ_TEST_REDIS_URL"],
        "TQ_BROKER_KEYPREFIX": api_env["TQ_TEST_KEYPREFIX"],
        "TQ_DATABASE_URL": api_env["TQ_TEST_RESULT_BACKEND"],
        "TQ_DB_SCHEMA": api_env.get("TQ_TEST_DB_SCHEMA", ""),
        **settings,
    }


class ServedControlPlane:
    """``taskqueue control-plane`` serving ``settings`` on 127.0.0.1 with one token per role
    (``tokens``) and a random ``TQ_SECRET_KEY``; its output goes to ``log_path``."""

    def __init__(
        self, settings: Mapping[str, str], log_path: Path, workers: int = 1, threads: int = 8
    ) -> None:
        self.tokens, entries = tokens_for_roles()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "PYTHONPATH": pythonpath, "TQ_API_TOKENS": entries,
                    "TQ_SECRET_KEY": secrets.token_hex(32), **settings}  # fmt: skip
        self.command = [str(TASKQUEUE), "control-plane", "--bind", f"127.0.0.1:{self.port}",
                        "--workers", str(workers), "--threads", str(threads)]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError(f"the control plane at {self.url} was never started")
        return self._process

    def start(self, timeout: float = 30.0) -> ServedControlPlane:
        """Start the server and wait until ``/healthz`` answers 200; fail with its log if it
        exits first or does not answer within ``timeout`` seconds."""
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,  # its own group, see stop()
            )  # fmt: skip

        def answering() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the control plane exited with code {self.process.returncode} before it "
                    f"answered; log tail:\n{self.log_tail()}"
                )
            try:
                return requests.get(self.url + "/healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(answering, timeout=timeout, interval=0.1, message=lambda: (
            f"the control plane did not answer at {self.url}/healthz; log tail:\n"
            f"{self.log_tail()}"))  # fmt: skip
        return self

    def stop(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM (gunicorn's graceful stop), then SIGKILL to the whole process group."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # the master and any worker that outlived it
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()

    def log_tail(self, lines: int = 80) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def headers(self, role: str = "viewer", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}", **extra}

    def get(self, path: str, role: str = "viewer", **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers(role), timeout=10, **kwargs)

    def post(self, path: str, body: Any, role: str = "operator") -> requests.Response:
        return requests.post(self.url + path, json=body, headers=self.headers(role), timeout=10)


class ServeControlPlane(Protocol):
    """Signature of the ``serve_control_plane`` fixture (for type hints in tests)."""

    def __call__(
        self, api_env: Mapping[str, str], workers: int = 1, threads: int = 8, **settings: str
    ) -> ServedControlPlane: ...
