"""The control plane as deployed: ``taskqueue control-plane`` (gunicorn, threaded workers)
with a real worker, Redis and PostgreSQL.

- the event stream delivers a task's state change within a second of it being recorded (fed
  by PostgreSQL notifications), resumes after ``Last-Event-ID`` without repeating what the
  client saw, and does not keep other requests waiting;
- ``/readyz`` turns 503 naming Redis or PostgreSQL while it is stopped (our own servers), the
  API answers 503 naming it too, and both recover once it is back;
- a graceful stop (SIGTERM) ends open streams at once instead of waiting them out;
- errors are JSON with the right status through the real server: an unknown route (404), a
  wrong method (405), a body over the limit (413).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from alembic import command

from control_plane.settings import Settings
from taskqueue_backend.backend.migrate import make_config, upgrade
from taskqueue_backend.embedded import EmbeddedRedis, free_port
from tests.support import REPO_ROOT, StartWorker, wait_for
from tests.support.control_plane import ServeControlPlane, ServedControlPlane, make_api
from tests.support.postgres import EmbeddedPostgres, find_bindir
from tests.test_api_tasks import BACKEND_APP

TASKQUEUE = Path(sys.executable).parent / "taskqueue"


@pytest.fixture
def server(
    api_env: dict[str, str], api: Any, serve_control_plane: ServeControlPlane
) -> ServedControlPlane:
    """The production server, two worker processes, on this test's broker prefix and result
    store (whose tables ``api`` has created)."""
    assert api.ops.results is not None  # opened and migrated before two servers race to
    # a slow poll: only PostgreSQL's notifications can deliver within a second
    return serve_control_plane(api_env, workers=2, TQ_STREAM_HEARTBEAT="1", TQ_STREAM_POLL="5")


@dataclass
class Stream:
    """An open ``/api/v1/stream``, read by a thread: each event with the time it arrived."""

    response: requests.Response
    events: list[tuple[float, str, str | None, dict[str, Any]]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    opened: threading.Event = field(default_factory=threading.Event)

    closed: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)  # the server ended it

    def close(self) -> None:
        self.closed.set()
        self.response.close()

    def read(self) -> None:
        try:
            self._read()
            self.ended.set()
        except Exception:
            if not self.closed.is_set():
                raise

    def _read(self) -> None:
        kind, ident, data = None, None, None
        for line in self.response.iter_lines(decode_unicode=True):
            if line.startswith("retry:"):
                self.opened.set()
            elif line.startswith(":"):
                self.comments.append(line)
            elif line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("id: "):
                ident = line.removeprefix("id: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
            elif line == "" and kind is not None and data is not None:
                self.events.append((time.time(), kind, ident, data))
                kind, ident, data = None, None, None

    def of_task(self, task_id: str) -> list[tuple[float, str | None, dict[str, Any]]]:
        return [(at, i, d) for at, k, i, d in list(self.events)
                if k == "task" and d["task_id"] == task_id]  # fmt: skip


def open_stream(server: ServedControlPlane, **headers: str) -> Stream:
    response = requests.get(server.url + "/api/v1/stream", headers=server.headers(**headers),
                            stream=True, timeout=(5, 30))  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    stream = Stream(response)
    threading.Thread(target=stream.read, daemon=True).start()
    assert stream.opened.wait(10), "the stream sent nothing"
    return stream


def test_the_stream_delivers_a_state_change_within_a_second(
    server: ServedControlPlane, api_env: dict[str, str], start_worker: StartWorker
) -> None:
    if "sqlite" in api_env["TQ_TEST_RESULT_BACKEND"]:
        pytest.skip("PostgreSQL notifications feed the stream; SQLite is polled")
    start_worker(app=BACKEND_APP, env=api_env).wait_ready()
    stream = open_stream(server)
    sent = server.post("/api/v1/tasks", {"name": "bk.stamp", "args": [0.2]})
    assert sent.status_code == 201, sent.text
    task_id = sent.json()["task_id"]

    def finished() -> Any:
        return [e for e in stream.of_task(task_id) if e[2]["event"] == "succeeded"]

    [(arrived, position, change)] = wait_for(finished, timeout=30, message=lambda: (
        f"no succeeded event: {stream.of_task(task_id)}"))  # fmt: skip
    recorded = _epoch(change["at"])
    assert arrived - recorded < 1.0, f"delivered {arrived - recorded:.3f} s after it happened"
    assert [e[2]["event"] for e in stream.of_task(task_id)] == ["sent", "received", "started",
                                                                "succeeded"]  # fmt: skip
    started = time.monotonic()
    assert server.get("/api/v1/me").json()["role"] == "viewer"
    assert time.monotonic() - started < 2, "an open stream kept another request waiting"

    first_position = stream.of_task(task_id)[0][1]
    resumed = open_stream(server, **{"Last-Event-ID": str(first_position)})
    wait_for(lambda: len(resumed.of_task(task_id)) == 3, timeout=10)
    assert [e[2]["event"] for e in resumed.of_task(task_id)] == ["received", "started",
                                                                 "succeeded"]  # fmt: skip
    assert resumed.of_task(task_id)[-1][1] == position
    wait_for(lambda: ": heartbeat" in stream.comments, timeout=15, message="no heartbeat comment")
    stream.close()
    resumed.close()


def test_a_graceful_stop_ends_open_streams_instead_of_waiting_for_them(
    api_env: dict[str, str], api: Any, serve_control_plane: ServeControlPlane
) -> None:
    served = serve_control_plane(api_env, workers=2)  # TQ_STREAM_POLL: 0.5 s
    streams = [open_stream(served) for _ in range(3)]
    started = time.monotonic()
    served.stop(timeout=30)  # SIGTERM; SIGKILL only after 30 s
    took = time.monotonic() - started
    assert served.process.returncode == 0, served.log_tail()
    # gunicorn's graceful timeout is 10 s: streams left open would hold it that long
    assert took < 5, f"the server took {took:.1f} s to stop with open streams"
    assert "SIGKILL" not in served.log_tail()
    for stream in streams:
        assert wait_for(lambda s=stream: s.ended.is_set(), timeout=5)


def test_health_answers_while_streams_take_every_slot(
    api_env: dict[str, str], serve_control_plane: ServeControlPlane
) -> None:
    """Eight threads: at most four streams (the other four threads answer everything else),
    at most two per caller; more are 429 with Retry-After."""
    served = serve_control_plane(api_env, threads=8, TQ_STREAM_LIMIT_PER_CALLER="2")
    viewer = [open_stream(served) for _ in range(2)]
    refused = requests.get(served.url + "/api/v1/stream", headers=served.headers(),
                           stream=True, timeout=10)  # fmt: skip
    assert refused.status_code == 429, refused.text
    assert "viewer-user holds" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) > 0
    others = [open_stream(served, role=role) for role in ("operator", "admin")]
    for role in ("viewer", "operator", "admin") * 4:  # far more streams than threads
        extra = requests.get(served.url + "/api/v1/stream", headers=served.headers(role),
                             stream=True, timeout=10)  # fmt: skip
        assert extra.status_code == 429, extra.text
        extra.close()
    started = time.monotonic()
    for path in ("/healthz", "/readyz", "/api/v1/me", "/login"):
        answer = requests.get(served.url + path, headers=served.headers(), timeout=5)
        assert answer.status_code == 200, (path, answer.text)
    assert time.monotonic() - started < 3, "health and sign-in waited for a thread"
    assert all(not stream.ended.is_set() for stream in [*viewer, *others])


def test_a_stream_whose_client_went_away_frees_its_slot_within_seconds(
    api_env: dict[str, str], serve_control_plane: ServeControlPlane
) -> None:
    """A browser that leaves a live page closes its connection; the server finds that at its
    next write, so a caller clicking through pages is not refused for a heartbeat's time."""
    served = serve_control_plane(api_env, TQ_STREAM_LIMIT_PER_CALLER="1", TQ_STREAM_HEARTBEAT="60")

    def accepted() -> requests.Response | None:
        answer = requests.get(served.url + "/api/v1/stream", headers=served.headers(),
                              stream=True, timeout=10)  # fmt: skip
        if answer.status_code == 429:
            answer.close()
            return None
        return answer

    first = accepted()
    assert first is not None and first.status_code == 200
    assert accepted() is None, "a second stream for a caller allowed one"
    for _ in range(3):  # each closed stream's slot comes back within seconds
        first.close()
        started = time.monotonic()
        first = wait_for(accepted, timeout=5, interval=0.2,
                         message="the closed stream still holds its slot")  # fmt: skip
        assert first.status_code == 200, first.text
        assert time.monotonic() - started < 5
    first.close()


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_errors_are_json_through_the_real_server(server: ServedControlPlane) -> None:
    unknown = server.get("/api/v1/nothing-here")
    wrong = requests.put(server.url + "/api/v1/tasks", headers=server.headers(), timeout=10)
    big = requests.post(server.url + "/api/v1/tasks", headers=server.headers("operator"),
                        data=json.dumps({"name": "x" * 2_000_000}), timeout=10)  # fmt: skip
    for response, status, code in ((unknown, 404, "not_found"),
                                   (wrong, 405, "method_not_allowed"),
                                   (big, 413, "body_too_large")):  # fmt: skip
        assert response.status_code == status, response.text
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == code
        assert "Traceback" not in response.text and "<html" not in response.text.lower()


def test_readyz_names_what_is_down_and_recovers(tmp_path: Path) -> None:
    if find_bindir() is None:
        pytest.skip("PostgreSQL binaries (initdb, postgres) are not installed: the database "
                    "half of this test needs a server it may stop")  # fmt: skip
    with EmbeddedRedis() as redis_server, EmbeddedPostgres() as postgres:
        api = next(make_api(redis_server.url, "ready:", postgres.url))
        try:
            assert api.get("/readyz", role=None).json["checks"] == {
                "redis": "ok", "database": "ok", "migrations": "ok"}  # fmt: skip
            engine = api.ops.results.engine
            with engine.begin() as connection:  # tables one migration behind this release
                command.downgrade(make_config(connection, "tq_", None), "0002")
            behind = api.get("/readyz", role=None)
            assert behind.status_code == 503
            assert behind.json["error"]["details"]["down"] == ["migrations"]
            assert "taskqueue db upgrade" in behind.json["error"]["message"]
            upgrade(engine, "tq_", None)
            assert api.get("/readyz", role=None).status_code == 200

            redis_server.kill()
            down = api.get("/readyz", role=None)
            assert down.status_code == 503 and down.json["error"]["details"]["down"] == ["redis"]
            queues = api.get("/api/v1/queues")
            assert queues.status_code == 503, queues.json
            assert queues.json["error"]["details"]["down"] == ["redis"]
            said = queues.json["error"]["message"] + json.dumps(down.json)
            assert "127.0.0.1" not in said and "Connection refused" not in said, said
            unsent = api.post("/api/v1/tasks", {"name": "bk.add", "args": [1, 2]})
            assert unsent.status_code == 503, unsent.json
            assert unsent.json["error"]["details"]["down"] == ["redis"]
            assert api.get("/api/v1/tasks").json["items"] == [], "a task that was never sent"
            redis_server.start()
            wait_for(lambda: api.get("/readyz", role=None).status_code == 200, timeout=15)

            postgres.stop()
            down = api.get("/readyz", role=None)
            assert down.status_code == 503, down.json
            assert down.json["error"]["details"]["down"] == ["database"]
            tasks = api.get("/api/v1/tasks")
            assert tasks.status_code == 503, tasks.json
            assert tasks.json["error"]["details"]["down"] == ["database"]
            said = tasks.json["error"]["message"] + json.dumps(down.json)
            assert "127.0.0.1" not in said and "SELECT" not in said, said
            postgres.start()
            wait_for(lambda: api.get("/readyz", role=None).status_code == 200, timeout=15)
            assert api.get("/api/v1/tasks").status_code == 200
        finally:
            api.ops.close()


def test_the_server_refuses_to_start_with_bad_settings(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(TASKQUEUE), "control-plane", "--bind", f"127.0.0.1:{free_port()}"],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TQ_BROKER_URL": "redis://127.0.0.1:1/0",
             "TQ_API_TOKENS": "someone:superuser:abc"},
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )  # fmt: skip
    assert done.returncode != 0
    assert "superuser" in done.stderr and "Traceback" not in done.stderr
    assert Settings.from_env({"TQ_BROKER_URL": "redis://x"}).metrics_public is True
