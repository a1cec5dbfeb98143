"""A real Flower process against a real worker on this broker: every view answers, and the
broker page and ``/api/queues/length`` show the true counts (Flower by itself counts Redis
lists this broker does not keep)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from taskqueue_backend.embedded import free_port
from tests.app import make_app
from tests.support import REPO_ROOT, WorkerProcess, operations_for, wait_for, worker_command

ACKS_LATE = {"TQ_TEST_ACKS_LATE": "1", "TQ_TEST_PREFETCH": "1"}


class Flower:
    def __init__(self, base: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.base = base
        self.process = process
        self.log = log

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)


@pytest.fixture
def flower(redis_url: str, keyprefix: str, tmp_path: Path) -> Iterator[Flower]:
    port = free_port()
    log = tmp_path / "flower.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TQ_TEST_REDIS_URL": redis_url,
           "TQ_TEST_KEYPREFIX": keyprefix, "FLOWER_UNAUTHENTICATED_API": "true"}  # fmt: skip
    command = [sys.executable, "-m", "celery", "-A", "tests.app", "flower",
               "--address=127.0.0.1", f"--port={port}", "--inspect_timeout=2000"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    found = Flower(f"http://127.0.0.1:{port}", process, log)

    def up() -> bool:
        assert process.poll() is None, f"flower exited:\n{log.read_text()[-3000:]}"
        try:
            return found.get("/healthcheck")[0] == 200
        except OSError:
            return False

    wait_for(up, timeout=30, message=lambda: f"flower did not start:\n{log.read_text()[-3000:]}")
    yield found
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def client(redis_url: str, keyprefix: str) -> Iterator[Celery]:
    app = make_app(redis_url, keyprefix)
    yield app
    app.close()


class QueueRows(HTMLParser):
    """The cells of each row of Flower's broker table, by the row's id (the queue name)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self._row: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr" and dict(attrs).get("id"):
            self._row = dict(attrs)["id"]
            self.rows[self._row or ""] = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self.rows[self._row].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_flower_shows_true_queue_counts_and_every_view_works(
    redis_url: str, keyprefix: str, client: Celery, flower: Flower, tmp_path: Path
) -> None:
    name = "flowered@localhost"
    command = [
        a
        for a in worker_command("tests.app", ["celery"], 1, "prefork", name, ["-E"])
        if a != "--without-heartbeat"
    ]  # Flower follows workers by their heartbeats
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TQ_TEST_REDIS_URL": redis_url,
           "TQ_TEST_KEYPREFIX": keyprefix, **ACKS_LATE}  # fmt: skip
    worker = WorkerProcess(command, env, tmp_path / "worker.log", name).start()
    ops = operations_for(redis_url, keyprefix)
    try:
        worker.wait_ready()
        client.send_task("no.such.task", ("dead",))
        wait_for(lambda: ops.dead_letters.stats().total == 1, timeout=30)
        busy = client.send_task("tests.app.sleep_then_record", ("busy", 60.0)).id
        wait_for(lambda: [m.state for m in ops.queues.find(busy)] == ["inflight"], timeout=30)
        waiting = [client.send_task("tests.app.record", (f"w{i}",)).id for i in range(2)]
        later = [client.send_task("tests.app.record", (f"l{i}",), countdown=600).id
                 for i in range(3)]  # fmt: skip
        expected = {"name": "celery", "messages": 6, "messages_ready": 2,
                    "messages_unacknowledged": 1, "messages_delayed": 3, "dead_letters": 1,
                    "consumers": 1, "paused": False}  # fmt: skip
        stats = ops.queues.stats("celery")
        assert (stats.ready, stats.inflight, stats.delayed, stats.dead) == (2, 1, 3, 1)

        # Flower learns the worker's queues from its inspect replies
        def lengths() -> Any:
            found = flower.json("/api/queues/length")["active_queues"]
            return found if found == [expected] else None

        wait_for(lengths, timeout=30,
                 message=lambda: f"wrong counts: {flower.get('/api/queues/length')}")  # fmt: skip

        status, page = flower.get("/broker")
        assert status == 200, page[:500]
        parser = QueueRows()
        parser.feed(page)
        assert parser.rows["celery"][:5] == ["celery", "6", "1", "2", "1"], parser.rows
        assert "redis://" in page and "taskqueue_backend.transport" not in page

        # (Flower's first inspection ran before the worker started: ask until it is listed)
        workers = wait_for(
            lambda: (w := flower.json(f"/api/workers?refresh=1&workername={name}")) and name in w
            and "scheduled" in w[name] and w,
            timeout=30, message=lambda: f"Flower does not list {name}: {flower.log.read_text()}",
        )  # fmt: skip
        scheduled = workers[name]["scheduled"]
        assert sorted(e["request"]["id"] for e in scheduled) == sorted(later)
        assert {e["request"]["name"] for e in scheduled} == {"tests.app.record"}
        assert [q["name"] for q in workers[name]["active_queues"]] == ["celery"]

        tasks = wait_for(lambda: (t := flower.json("/api/tasks")) and busy in t and t,
                         timeout=30, message="Flower never saw the running task")  # fmt: skip
        assert tasks[busy]["state"] == "STARTED"
        for path in ("/", "/workers", "/tasks", f"/worker/{name}", f"/task/{busy}"):
            status, body = flower.get(path)
            assert status == 200, (path, status, body[:300])
        assert waiting[0] not in flower.json("/api/tasks"), "not received: still in the broker"
        assert "'redis' broker is not supported" not in flower.log.read_text()
        assert not re.search(r"Unable to get queues", flower.log.read_text())
    finally:
        worker.stop(timeout=5)
        ops.close()
