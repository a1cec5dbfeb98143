"""Celery's own semantics on this broker and backend, checked side by side with stock ones.

- chords whose header fails raise what the header raised (a task body or a group body), as
  with Celery's stock Redis result backend, and promptly (a group body does not wait out its
  timeout);
- a task with ``ignore_result`` leaves nothing in the result store (``PENDING``), as stock;
- a task that fails for good produces exactly the events it produces on kombu's stock Redis
  transport (``task-sent`` once, never as its own child), although this broker keeps it as a
  dead letter;
- ``celery purge`` removes waiting messages, delayed ones included; messages in flight and
  dead letters stay;
- an expired task is REVOKED with ``TaskRevokedError('expired')`` and ``get()`` raises it, as
  on kombu's stock transport with Celery's stock Redis backend in the same test (and this
  broker keeps its message in the dead letters);
- a hard time limit is recorded as stock records it: FAILURE with ``TimeLimitExceeded``, one
  ``failed`` history row, one dead letter, no false error in the worker's log;
- a failure in a chain fails the group after it, so ``get()`` on the group raises (where stock
  Celery, in the same test, leaves the group's members PENDING).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from billiard.exceptions import TimeLimitExceeded
from celery import Celery, chord, group
from celery.exceptions import TaskRevokedError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu import Connection, Consumer, Queue

from taskqueue_backend.embedded import EmbeddedRedis
from tests.app import TRANSPORT, make_app
from tests.backend_app import make_app as make_backend_app
from tests.support import REPO_ROOT, StartWorker, operations_for, wait_for
from tests.support.dead_letters import bury
from tests.support.events import EventCollector
from tests.support.redis_service import skip_stock_on_cluster

BACKEND_APP = "tests.backend_app"


@pytest.fixture(scope="module")
def stock_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own for Celery's stock Redis result backend."""
    server = EmbeddedRedis(dir=str(tmp_path_factory.mktemp("stock-results"))).start()
    yield server.url
    server.stop()


def env_for(
    setup: str, request: pytest.FixtureRequest, redis_url: str, keyprefix: str, tmp_path: Path
) -> dict[str, str]:
    """Worker and client settings: this broker with Celery's stock Redis backend
    ("stock-redis") or this package's ("postgresql", "sqlite"), or stock Celery itself:
    kombu's stock Redis transport with Celery's stock Redis backend ("stock-celery")."""
    env = {"TQ_TEST_REDIS_URL": redis_url, "TQ_TEST_KEYPREFIX": keyprefix,
           "TQ_TEST_TABLE_PREFIX": "tq_"}  # fmt: skip
    if setup in ("stock-redis", "stock-celery"):
        skip_stock_on_cluster(redis_url)
        env["TQ_TEST_RESULT_BACKEND"] = request.getfixturevalue("stock_results")
        if setup == "stock-celery":
            env["TQ_TEST_STOCK_BROKER"] = "1"
    elif setup == "postgresql":
        database_url = request.getfixturevalue("database_url")
        if database_url is None:
            pytest.skip("no PostgreSQL available (set DATABASE_URL)")
        env.update(TQ_TEST_RESULT_BACKEND=f"tq+{database_url}",
                   TQ_TEST_DB_SCHEMA=request.getfixturevalue("pg_schema"))  # fmt: skip
    else:
        env["TQ_TEST_RESULT_BACKEND"] = f"tq+sqlite:///{tmp_path / 'results.db'}"
    return env


@pytest.fixture(params=["stock-redis", "postgresql", "sqlite"])
def results_env(
    request: pytest.FixtureRequest, redis_url: str, keyprefix: str, tmp_path: Path
) -> dict[str, str]:
    """Worker and client settings with Celery's stock Redis backend or this package's."""
    return env_for(request.param, request, redis_url, keyprefix, tmp_path)


@pytest.fixture(params=["stock-celery", "stock-redis", "postgresql", "sqlite"])
def side_by_side_env(
    request: pytest.FixtureRequest, redis_url: str, keyprefix: str, tmp_path: Path
) -> dict[str, str]:
    """``results_env``'s set-ups and stock Celery itself, side by side."""
    return env_for(request.param, request, redis_url, keyprefix, tmp_path)


@pytest.fixture
def backend_client(results_env: dict[str, str]) -> Iterator[Celery]:
    app = make_backend_app(results_env)
    yield app
    app.close()


def test_a_chord_whose_header_fails_raises_what_the_header_raised(
    results_env: dict[str, str], backend_client: Celery, start_worker: StartWorker
) -> None:
    start_worker(app=BACKEND_APP, env=results_env).wait_ready()
    sig = backend_client.signature

    # the failure arrives while get() waits (not before it started)
    body = chord([sig("bk.add", (1, 1)), sig("bk.fail_after", (1.0, "late"))])(sig("bk.tsum"))
    started = time.monotonic()
    with pytest.raises(ValueError, match="^late$"):
        body.get(timeout=30)
    assert time.monotonic() - started < 15
    # the body itself is failed by the chord
    wait_for(lambda: body.state == "FAILURE", timeout=15, message=lambda: body.state)

    # a group as the chord's body: its members are failed at once, not left waiting
    members = group(sig("bk.add", (2, 2)), sig("bk.add", (3, 3)))
    grouped = chord([sig("bk.add", (1, 1)), sig("bk.fail_after", (1.0, "late too"))])(members)
    started = time.monotonic()
    with pytest.raises(ValueError, match="^late too$"):
        grouped.get(timeout=30)
    assert time.monotonic() - started < 15
    wait_for(
        lambda: {r.state for r in grouped.results} == {"FAILURE"}, timeout=15,
        message=lambda: f"group body members: {[r.state for r in grouped.results]}",
    )  # fmt: skip


def test_a_task_with_ignore_result_leaves_nothing_in_the_result_store(
    results_env: dict[str, str], backend_client: Celery, start_worker: StartWorker
) -> None:
    start_worker(app=BACKEND_APP, env=results_env, concurrency=1).wait_ready()
    ignored = backend_client.signature("bk.sleep", (1.0,)).apply_async(ignore_result=True)
    after = backend_client.signature("bk.add", (1, 2)).delay()  # one process: runs after it
    assert after.get(timeout=30) == 3
    time.sleep(0.5)  # past the history writer's flush interval (0.2 s)

    assert backend_client.backend.get_task_meta(ignored.id)["status"] == "PENDING"
    if results_env["TQ_TEST_RESULT_BACKEND"].startswith("tq+"):
        assert backend_client.backend.task_history(ignored.id) == []
        events = [e["event"] for e in backend_client.backend.task_history(after.id)]
        assert events == ["received", "started", "succeeded"], "other tasks are recorded"


@pytest.mark.parametrize("broker", ["stock", "taskqueue"])
def test_a_task_failing_for_good_sends_the_events_it_sends_on_stock_kombu(
    broker: str, redis_url: str, keyprefix: str, start_worker: StartWorker
) -> None:
    stock = broker == "stock"
    if stock:
        skip_stock_on_cluster(redis_url)
    env = {"TQ_TEST_STOCK_BROKER": "1"} if stock else {}
    start_worker(env=env, extra_args=["-E"]).wait_ready()
    app = make_app(redis_url, keyprefix, stock=stock)
    app.conf.task_send_sent_event = True
    events = EventCollector(app).start()  # subscribed when it returns
    try:
        task_id = app.send_task("tests.app.always_fail", ("boom",)).id
        wait_for(
            lambda: "task-failed" in events.types_for(uuid=task_id),
            timeout=30,
            message=lambda: f"no task-failed event; saw {events.types_for(uuid=task_id)}",
        )
        time.sleep(1.0)  # anything sent after the failure arrives by now
        mine = [e for e in list(events.events) if e.get("uuid") == task_id]
    finally:
        events.stop()
        app.close()

    # The client sends task-sent after its publish returns, so a worker that picks the
    # message up quickly can send task-received first, on stock as on ours: order is
    # only promised within each sender.
    assert [e["type"] for e in mine if e["type"] == "task-sent"] == ["task-sent"]
    assert [e["type"] for e in mine if e["type"] != "task-sent"] == [
        "task-received", "task-started", "task-failed"]  # fmt: skip
    assert [e.get("parent_id") for e in mine if e["type"] == "task-sent"] == [None]
    if not stock:  # and it is kept
        ops = operations_for(redis_url, keyprefix)
        assert ops.dead_letters.get(task_id).reason == "failed"
        ops.close()


def drain(connection: Connection) -> None:
    try:
        connection.drain_events(timeout=0.2)
    except TimeoutError:
        pass


def test_celery_purge_removes_waiting_and_delayed_messages_and_keeps_the_rest(
    redis_url: str, keyprefix: str
) -> None:
    app = make_app(redis_url, keyprefix)
    ops = operations_for(redis_url, keyprefix)
    try:
        with Connection(
            redis_url, transport=TRANSPORT, transport_options={"global_keyprefix": keyprefix}
        ) as holder:
            held = app.send_task("tests.app.record", ("held",)).id
            taken: list[Any] = []
            consumer = Consumer(
                holder.default_channel,
                [Queue("celery")],
                callbacks=[lambda body, message: taken.append(message)],
            )
            consumer.consume()
            wait_for(lambda: drain(holder) or taken, timeout=10)
            dead = bury(app, "tests.app.record", ("dead",))
            for i in range(3):
                app.send_task("tests.app.record", (f"ready{i}",))
            app.send_task("tests.app.record", ("later",), countdown=600)
            before = ops.queues.stats("celery")
            assert (before.ready, before.delayed, before.inflight, before.dead) == (3, 1, 1, 1)

            done = subprocess.run(
                [sys.executable, "-m", "celery", "-A", "tests.app", "purge", "-f"],
                capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                env={"PYTHONPATH": str(REPO_ROOT), "TQ_TEST_REDIS_URL": redis_url,
                     "TQ_TEST_KEYPREFIX": keyprefix, "PATH": "/usr/bin:/bin"},
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "Purged 4 messages" in done.stdout, done.stdout

            after = ops.queues.stats("celery")
            assert (after.ready, after.delayed, after.inflight, after.dead) == (0, 0, 1, 1)
            assert [m.state for m in ops.queues.find(held)] == ["inflight"]
            assert ops.dead_letters.get(dead).task_id == dead
            taken[0].ack()
    finally:
        ops.close()
        app.close()


def test_purging_a_queue_can_keep_its_delayed_tasks(redis_url: str, keyprefix: str) -> None:
    app = make_app(redis_url, keyprefix)
    ops = operations_for(redis_url, keyprefix)
    try:
        app.send_task("tests.app.record", ("now",))
        later = app.send_task("tests.app.record", ("later",), countdown=600).id
        assert ops.queues.purge("celery", include_delayed=False, reason="keep the ETAs") == 1
        assert [m.state for m in ops.queues.find(later)] == ["delayed"]
        [entry] = ops.audit.entries(limit=1).items
        assert (entry.action, entry.target, entry.reason) == ("queue.purge", "celery",
                                                                "keep the ETAs")  # fmt: skip
        assert entry.detail == {"outcome": "done", "purged": 1, "include_delayed": False}
    finally:
        ops.close()
        app.close()


def kept_dead_letters(env: dict[str, str], task_id: str) -> list[Any]:
    """The dead letters of ``task_id`` (none on kombu's stock transport: it keeps none)."""
    if env.get("TQ_TEST_STOCK_BROKER") == "1":
        return []
    ops = operations_for(env["TQ_TEST_REDIS_URL"], env["TQ_TEST_KEYPREFIX"])
    try:
        return [e for e in ops.dead_letters.matching() if e.task_id == task_id]
    finally:
        ops.close()


@pytest.mark.parametrize("side_by_side_env", ["stock-celery", "stock-redis", "postgresql"],
                         indirect=True)  # fmt: skip
def test_an_expired_task_is_revoked_as_stock_revokes_it(
    side_by_side_env: dict[str, str], start_worker: StartWorker
) -> None:
    env = side_by_side_env
    worker = start_worker(app=BACKEND_APP, env=env, extra_args=["-E"])
    worker.wait_ready()
    app = make_backend_app(env)
    try:
        expired = app.signature("bk.add", (1, 2)).apply_async(countdown=1.5, expires=0.5)
        with pytest.raises(TaskRevokedError, match="^expired$"):
            expired.get(timeout=30)
        meta = app.backend.get_task_meta(expired.id)
        assert meta["status"] == "REVOKED"
        assert repr(meta["result"]) == "TaskRevokedError('expired')"
        if env["TQ_TEST_RESULT_BACKEND"].startswith("tq+"):
            events = [(r["event"], (r["detail"] or {}).get("reason"))
                      for r in app.backend.task_history(expired.id)]  # fmt: skip
            assert ("revoked", "expired") in events, events
        if env.get("TQ_TEST_STOCK_BROKER") != "1":  # kept where an operator sees it
            [entry] = wait_for(lambda: kept_dead_letters(env, expired.id), timeout=10)
            assert entry.reason == "expired"
        assert app.signature("bk.add", (2, 2)).delay().get(timeout=30) == 4
    finally:
        app.close()


@pytest.mark.parametrize("side_by_side_env", ["stock-celery", "stock-redis", "postgresql"],
                         indirect=True)  # fmt: skip
def test_a_hard_time_limit_is_recorded_as_stock_records_it(
    side_by_side_env: dict[str, str], start_worker: StartWorker
) -> None:
    env = side_by_side_env
    worker = start_worker(app=BACKEND_APP, env=env)
    worker.wait_ready()
    app = make_backend_app(env)
    try:
        limited = app.signature("bk.sleep", (4.0,)).apply_async(time_limit=1)
        with pytest.raises(TimeLimitExceeded) as raised:
            limited.get(timeout=30)
        assert raised.value.args == (1,)
        assert str(raised.value) == "TimeLimitExceeded(1,)"
        meta = app.backend.get_task_meta(limited.id)
        assert (meta["status"], meta["traceback"]) == ("FAILURE", None)
        if env["TQ_TEST_RESULT_BACKEND"].startswith("tq+"):
            time.sleep(0.5)  # a second report of the failure would be written by now
            history = app.backend.task_history(limited.id)
            failed = [r for r in history if r["event"] == "failed"]
            assert len(failed) == 1, [r["event"] for r in history]
            assert failed[0]["detail"]["exception"] == "TimeLimitExceeded: TimeLimitExceeded(1,)"
            row = app.backend.store.read(limited.id)
            assert (row.exception_type, row.exception_message) == (
                "TimeLimitExceeded", "TimeLimitExceeded(1,)")  # fmt: skip
        if env.get("TQ_TEST_STOCK_BROKER") != "1":
            [entry] = wait_for(lambda: kept_dead_letters(env, limited.id), timeout=10)
            assert entry.reason == "failed"
            assert entry.exc_type == "billiard.exceptions.TimeLimitExceeded"
            time.sleep(0.5)
            assert len(kept_dead_letters(env, limited.id)) == 1, "kept twice"
        assert "could not dead-letter" not in worker.log_text()
    finally:
        app.close()


@pytest.mark.parametrize("side_by_side_env", ["stock-celery", "postgresql", "sqlite"],
                         indirect=True)  # fmt: skip
def test_a_failure_in_a_chain_fails_the_group_after_it(
    side_by_side_env: dict[str, str], start_worker: StartWorker
) -> None:
    """``add | fail | group(add, add)``: the group never runs; ``get()`` on it raises what
    ``fail`` raised. Stock Celery's backends leave the members PENDING (Celery marks its own
    test of this xfail on its Redis backend), so there ``get()`` waits out its timeout."""
    env = side_by_side_env
    start_worker(app=BACKEND_APP, env=env).wait_ready()
    app = make_backend_app(env)
    try:
        sig = app.signature
        workflow = sig("bk.add", (1, 1)) | sig("bk.fail") | group(sig("bk.add", (1,)),
                                                                  sig("bk.add", (1,)))  # fmt: skip
        result = workflow.delay()
        if env.get("TQ_TEST_STOCK_BROKER") == "1":
            with pytest.raises(CeleryTimeoutError):
                result.get(timeout=2)
            assert {r.state for r in result.results} == {"PENDING"}
            return
        with pytest.raises(ValueError, match="^2$"):
            result.get(timeout=30)  # raises at the first member marked failed
        wait_for(lambda: {r.state for r in result.results} == {"FAILURE"}, timeout=10,
                 message=lambda: f"members: {[r.state for r in result.results]}")  # fmt: skip
    finally:
        app.close()
