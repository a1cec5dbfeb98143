"""The operations layer as a Python API: built from URLs or an app, no side effects on import,
the result store passed explicitly, kombu's connection machinery (Sentinel), one JSON shape.

- a replay from a process that never built a result backend reopens the result: the replayed
  task's new run is recorded (SUCCESS), not ignored as a late event of its failed run;
- importing any module of the package connects no Celery signal handler and registers no
  kombu alias; selecting the transport does;
- the operations reach a broker behind Redis Sentinel through kombu's connection;
- a task's status combines broker place, result and history, and serialises to one JSON shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from celery import Celery

from taskqueue_backend.embedded import EmbeddedRedis
from taskqueue_backend.operations import InvalidRequest, NotFound, Operations, to_json
from tests.app import TRANSPORT
from tests.backend_app import make_app as make_backend_app
from tests.support import REPO_ROOT, StartWorker, wait_for
from tests.test_connection_urls import start_sentinel

BACKEND_APP = "tests.backend_app"

REPLAY_ELSEWHERE = """
import json, sys
from taskqueue_backend.operations import Operations
from taskqueue_backend.backend import history

settings = json.loads(sys.argv[1])
ops = Operations.from_urls(settings["redis"], settings["database"],
                           transport_options={"global_keyprefix": settings["prefix"]},
                           schema=settings["schema"], actor="elsewhere")
outcome = ops.dead_letters.replay([settings["task_id"]], reason="fixed")
print(json.dumps({"done": outcome.done, "backend_built": history.current_backend() is not None,
                  "backend_module": "taskqueue_backend.backend.backend" in sys.modules}))
"""


def test_a_replay_from_a_process_without_a_backend_reopens_the_result(
    backend_env: dict[str, str], start_worker: StartWorker, redis_url: str, keyprefix: str
) -> None:
    start_worker(app=BACKEND_APP, env=backend_env).wait_ready()
    flag = f"{keyprefix}fixed"
    app: Celery = make_backend_app(backend_env)
    try:
        task = app.signature("bk.reject_until_fixed", args=(flag,)).delay()
        wait_for(lambda: app.AsyncResult(task.id).state == "FAILURE", timeout=30,
                 message="the rejection was not recorded as a failure")  # fmt: skip
        redis.Redis.from_url(redis_url).set(flag, "1")
        settings = {"redis": redis_url, "database": backend_env["TQ_TEST_RESULT_BACKEND"],
                    "prefix": keyprefix, "schema": backend_env.get("TQ_TEST_DB_SCHEMA"),
                    "task_id": task.id}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", REPLAY_ELSEWHERE, json.dumps(settings)],
            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1]) == {
            "done": 1, "backend_built": False, "backend_module": False}  # fmt: skip

        assert app.AsyncResult(task.id).get(timeout=30) == "fixed"
        history = [r["event"] for r in app.backend.task_history(task.id)]
        assert history[history.index("replayed"):] == ["replayed", "received", "started",
                                                       "succeeded"], history  # fmt: skip
        [row] = [r for r in app.backend.task_history(task.id) if r["event"] == "replayed"]
        assert (row["detail"]["actor"], row["detail"]["reason"]) == ("elsewhere", "fixed")
    finally:
        app.close()


IMPORT_EVERYTHING = """
import importlib, json, pkgutil
import taskqueue_backend
names = [m.name for m in pkgutil.walk_packages(taskqueue_backend.__path__, "taskqueue_backend.")
         if ".migrations" not in m.name]
for name in names:
    importlib.import_module(name)
from celery import signals
from kombu.transport import TRANSPORT_ALIASES
receivers = {name: len(getattr(signals, name).receivers) for name in
             ("task_failure", "task_prerun", "task_received", "worker_init", "task_unknown")}
before = {"modules": len(names), "receivers": receivers, "alias": "tq" in TRANSPORT_ALIASES}
from kombu import Connection
Connection("redis://127.0.0.1:1/0", transport="taskqueue_backend.transport:Transport").transport
after = {"task_failure": len(signals.task_failure.receivers), "alias": "tq" in TRANSPORT_ALIASES}
print(json.dumps({"before": before, "after": after}))
"""


def test_importing_the_package_has_no_side_effects_selecting_the_transport_does() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING], capture_output=True, text=True, timeout=60,
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["before"]["modules"] > 40
    assert found["before"]["receivers"] == dict.fromkeys(found["before"]["receivers"], 0)
    assert found["before"]["alias"] is False
    assert found["after"] == {"task_failure": 1, "alias": True}


def test_the_operations_reach_a_broker_behind_sentinel(keyprefix: str, tmp_path: Path) -> None:
    from kombu import Connection, Queue

    with EmbeddedRedis() as master:
        process, port = start_sentinel(master.port, tmp_path)
        try:
            url = f"sentinel://127.0.0.1:{port}"
            options = {"master_name": "tqmaster", "global_keyprefix": keyprefix}
            with Connection(url, transport=TRANSPORT, transport_options=options) as connection:
                producer = connection.Producer()
                producer.publish({"hello": "sentinel"}, routing_key="via-sentinel",
                                 headers={"id": "sentinel-task", "task": "t.s"},
                                 declare=[Queue("via-sentinel")])  # fmt: skip
            ops = Operations.from_urls(url, transport_options=options, actor="tests")
            [stats] = ops.queues.all()
            assert (stats.queue, stats.ready) == ("via-sentinel", 1)
            assert ops.tasks.status("sentinel-task").place == "queued"
            assert ops.dead_letters.stats().total == 0 and ops.workers.all() == []
            assert ops.broker.describe().startswith("sentinel://")

            app = Celery(set_as_current=False)
            app.conf.update(broker_url=url, broker_transport=TRANSPORT,
                            broker_transport_options=options)  # fmt: skip
            assert [s.queue for s in Operations.from_app(app).queues.all()] == ["via-sentinel"]
            ops.close()
        finally:
            process.terminate()
            process.wait(10)


def test_views_have_one_json_shape_and_errors_say_what_to_do(
    redis_url: str, keyprefix: str, backend_env: dict[str, str]
) -> None:
    app = make_backend_app(backend_env)
    ops = Operations.from_app(app, actor="tests")
    try:
        task = app.signature("bk.add", (1, 2)).apply_async(countdown=600)
        status = to_json(ops.tasks.status(task.id))
        assert status["place"] == "delayed" and status["result"] is None
        [where] = status["broker"]
        assert where["due_at"].endswith("Z") and "T" in where["due_at"]  # UTC ISO 8601
        assert json.loads(json.dumps(status)) == status
        assert to_json(ops.queues.all())[0]["next_due_at"].endswith("Z")

        removed = ops.queues.remove(task.id, reason="not needed")
        assert removed.result_revoked
        result = ops.tasks.status(task.id).result
        assert result is not None and result.state == "REVOKED"
        assert [e.event for e in ops.tasks.history(task.id)] == ["revoked"]
        page = ops.tasks.search(limit=10)
        assert [r.task_id for r in page.items] == [task.id]

        for call, error, words in [
            (lambda: ops.tasks.status("no-such-task"), NotFound, "no task 'no-such-task'"),
            (lambda: ops.tasks.search(limit=0), InvalidRequest, "limit"),
            (lambda: ops.tasks.search(cursor="!!"), InvalidRequest, "invalid cursor"),
            (lambda: ops.queues.stats("nowhere"), NotFound, "no queue named 'nowhere'"),
            (
                lambda: ops.workers.all("sleeping"),
                InvalidRequest,
                "unknown worker status 'sleeping'; one of online, stale, offline",
            ),
        ]:
            try:
                call()
            except error as exc:
                assert words in str(exc), str(exc)
            else:
                raise AssertionError(f"expected {error.__name__} ({words})")
    finally:
        ops.close()
        app.close()


def test_a_task_is_found_in_a_queue_listed_after_the_previous_lookup(
    redis_url: str, keyprefix: str
) -> None:
    from kombu import Connection, Queue

    options = {"global_keyprefix": keyprefix}
    ops = Operations.from_urls(redis_url, transport_options=options, actor="tests")
    with Connection(redis_url, transport=TRANSPORT, transport_options=options) as connection:
        producer = connection.Producer()

        def publish(queue: str, task_id: str) -> None:
            producer.publish({"n": 1}, routing_key=queue, headers={"id": task_id, "task": "t.q"},
                             declare=[Queue(queue)])  # fmt: skip

        publish("first", "task-in-first")
        assert ops.tasks.status("task-in-first").place == "queued"
        # the lookups so far listed one queue; a task in a queue listed since is still found
        publish("second", "task-in-second")
        status = ops.tasks.status("task-in-second")
        assert (status.place, [m.queue for m in status.broker]) == ("queued", ["second"])
        assert [m.queue for m in ops.tasks.status("task-in-first").broker] == ["first"]
        ops.queues.purge("second", reason="tests")
        assert ops.tasks.status("task-in-first").place == "queued"
        with pytest.raises(NotFound):
            ops.tasks.status("task-in-second")
    ops.close()
