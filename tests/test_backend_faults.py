"""The result backend under faults and bad input.

- (a PostgreSQL crash and restart while tasks run: ``test_result_store_outage.py``);
- many writers racing on one task id never overwrite its terminal state, and every write
  leaves exactly one history row;
- a write retried after a failure that may have committed (a lost reply) stores its history
  rows once;
- unencodable results, oversized arguments and garbled exception text fail clearly (or run)
  and the task's state is still recorded;
- ``get()`` wakes on PostgreSQL NOTIFY within milliseconds (LISTEN is in use) and still works
  on SQLite by polling;
- what the broker did to a message (dead-lettered, returned after its worker died) appears in
  the task's history next to what the workers did.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import sqlalchemy
from celery import Celery, group, states
from kombu.exceptions import EncodeError
from sqlalchemy.engine import make_url

from taskqueue_backend.backend import deferred
from taskqueue_backend.backend.queries import UNSURE, event_row
from tests.backend_app import make_app
from tests.support import StartWorker, WorkerProcess, wait_for
from tests.support.proxy import ReplyDropper
from tests.support.state_writes import submit_success

BACKEND_APP = "tests.backend_app"
FAST_HEARTBEAT = {"heartbeat_interval": 0.5, "heartbeat_timeout": 2}


@contextlib.contextmanager
def client(env: dict[str, str]) -> Iterator[Celery]:
    app = make_app(env)
    try:
        yield app
    finally:
        app.close()


def hostname(role: str) -> str:
    return f"{role}-{uuid.uuid4().hex[:6]}@localhost"


def events_of(app: Celery, task_id: str) -> list[str]:
    return [row["event"] for row in app.backend.task_history(task_id)]


# -- 2. concurrent writers on one task id ----------------------------------------------------

WRITER_PROCESSES = 3
THREADS_PER_PROCESS = 3
WRITES_PER_THREAD = 20
SUCCESS_AT = (1, 1, WRITES_PER_THREAD // 2)  # (process, thread, write) that stores SUCCESS


def write_many_states(env: dict[str, str], task_id: str, process: int, barrier: Any) -> None:
    """One writer process: several threads storing STARTED/RETRY (and once SUCCESS)."""
    app = make_app(env)
    backend = app.backend
    backend.store.read(task_id)  # connect (and migrate) before the race starts
    barrier.wait(timeout=120)

    def thread_writes(thread: int) -> None:
        for write in range(WRITES_PER_THREAD):
            if (process, thread, write) == SUCCESS_AT:
                backend.store_result(task_id, {"winner": True}, states.SUCCESS)
            elif write % 2:
                backend.store_result(task_id, {"pid": process, "hostname": "h"}, states.STARTED)
            else:
                backend.store_result(task_id, RuntimeError(f"{process}.{thread}"), states.RETRY)

    with ThreadPoolExecutor(THREADS_PER_PROCESS) as pool:
        for future in [pool.submit(thread_writes, t) for t in range(THREADS_PER_PROCESS)]:
            future.result()
    app.close()


def test_concurrent_writers_never_overwrite_the_terminal_state(
    backend_env: dict[str, str],
) -> None:
    task_id = f"race-{uuid.uuid4()}"
    with client(backend_env) as app:
        app.backend.store.read(task_id)  # migrate once, before the writers start
        spawn = multiprocessing.get_context("spawn")
        barrier = spawn.Barrier(WRITER_PROCESSES)
        writers = [
            spawn.Process(target=write_many_states, args=(backend_env, task_id, n, barrier))
            for n in range(WRITER_PROCESSES)
        ]
        try:
            for process in writers:
                process.start()
            for process in writers:
                process.join(120)
        finally:
            for process in writers:
                if process.is_alive():
                    process.kill()
        assert [p.exitcode for p in writers] == [0] * WRITER_PROCESSES

        meta = app.backend.get_task_meta(task_id, cache=False)
        assert meta["status"] == states.SUCCESS
        assert meta["result"] == {"winner": True}
        results = app.backend.store.tables.results
        with app.backend.store.engine.connect() as conn:
            count = conn.execute(
                sqlalchemy.select(sqlalchemy.func.count()).where(results.c.task_id == task_id)
            ).scalar_one()
        assert count == 1

        history = app.backend.task_history(task_id)
        total = WRITER_PROCESSES * THREADS_PER_PROCESS * WRITES_PER_THREAD
        assert len(history) == total  # one row per write (SUCCESS replaced one write)
        succeeded = [row for row in history if row["event"] == "succeeded"]
        assert len(succeeded) == 1
        late = [row for row in history if row["id"] > succeeded[0]["id"]]
        assert late, "no write landed after SUCCESS: the race did not test the invariant"


# -- 2b. a write whose reply was lost ---------------------------------------------------------


def test_a_retried_write_never_repeats_history(backend_env: dict[str, str]) -> None:
    """A failed write may have committed; whatever retries it (the backend itself, the deferred
    writer, Celery's always-retry, the history writer) hands back the same rows, marked."""
    task_id = f"again-{uuid.uuid4()}"
    start = datetime.now(UTC)

    def event(name: str, ms: int) -> dict[str, Any]:
        return event_row(task_id, name, None, "w@h", at=start + timedelta(milliseconds=ms))

    def as_if_failed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for e in events:
            e[UNSURE] = True  # what a write that raised leaves on its rows
        return events

    with client(backend_env) as app:
        store = app.backend.store
        row = {"task_id": task_id, "state": states.STARTED, "updated_at": start}
        first = [event("received", 1), event("started", 2)]
        store.write(row, first)
        store.write(row, [*as_if_failed(first), event("retried", 3)])  # with one row more
        held = [event("received", 4)]
        store.write(None, held)
        store.write(None, as_if_failed(held))
        batch = [event("started", 5)]
        store.write_many([], batch)
        store.write_many([], as_if_failed(batch))
        replay = [event("replayed", 6)]
        store.reopen(replay, start)
        store.reopen(as_if_failed(replay), start)
        assert events_of(app, task_id) == [
            "received", "started", "retried", "received", "started", "replayed"]  # fmt: skip


@contextlib.contextmanager
def client_behind_a_reply_dropper(
    backend_env: dict[str, str], database_url: str
) -> Iterator[tuple[Celery, ReplyDropper]]:
    """A client whose database connections go through a ``ReplyDropper``; connected,
    migrated and with the state write prepared on the server, so the armed proxy loses the
    reply of a write itself (sent only after it committed)."""
    url = make_url(database_url)
    with ReplyDropper(url.host or "127.0.0.1", url.port or 5432) as proxy:
        through_proxy = url.set(host="127.0.0.1", port=proxy.port)
        env = {**backend_env,
               "TQ_TEST_RESULT_BACKEND": "tq+" + through_proxy.render_as_string(False)}  # fmt: skip
        with client(env) as app:
            app.backend.store_result(f"warm-{uuid.uuid4()}", 0, states.SUCCESS)
            yield app, proxy


@pytest.mark.parametrize("backend_env", ["postgresql"], indirect=True)
def test_a_state_write_whose_reply_was_lost_is_stored_once(
    backend_env: dict[str, str], database_url: str
) -> None:
    with client_behind_a_reply_dropper(backend_env, database_url) as (app, proxy):
        backend = app.backend
        task_id = f"lost-{uuid.uuid4()}"
        proxy.arm()
        backend.store_result(task_id, 42, states.SUCCESS)
        assert proxy.dropped.is_set(), "the proxy lost no reply: the fault did not happen"
        assert backend.get_task_meta(task_id, cache=False)["result"] == 42
        assert events_of(app, task_id) == ["succeeded"]


@pytest.mark.parametrize("backend_env", ["postgresql"], indirect=True)
def test_writes_committed_together_whose_reply_was_lost_are_stored_once(
    backend_env: dict[str, str], database_url: str
) -> None:
    """The deferred writer commits writes queued together in one transaction; when that
    commit's reply is lost, each is written again on its own, and its history stays single."""
    with client_behind_a_reply_dropper(backend_env, database_url) as (app, proxy):
        backend = app.backend
        writer = deferred.DeferredWriter()
        gate = threading.Event()
        writer.submit("gate", lambda: gate.wait(30))  # the writes pile up behind it
        task_ids = [f"lost-together-{uuid.uuid4()}" for _ in range(10)]
        for i, task_id in enumerate(task_ids):
            submit_success(writer, backend, task_id, result=str(i).encode())
        proxy.arm()
        gate.set()
        assert writer.drain(30)
        writer.stop()
        assert proxy.dropped.is_set(), "the proxy lost no reply: the fault did not happen"
        for i, task_id in enumerate(task_ids):
            assert backend.get_task_meta(task_id, cache=False)["result"] == i
            assert events_of(app, task_id) == ["succeeded"]


# -- 3. bad input ----------------------------------------------------------------------------


def test_bad_input_fails_clearly_and_keeps_the_state(
    backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    start_worker(app=BACKEND_APP, env=backend_env, hostname=hostname("bad")).wait_ready()
    with client(backend_env) as app:
        unencodable = app.signature("bk.unserializable").delay()
        blob = "x" * 200_000
        oversized = app.signature("bk.echo_size", args=(blob,)).delay()
        garbled = app.signature("bk.bad_traceback").delay()

        with pytest.raises(EncodeError, match="not JSON serializable"):
            unencodable.get(timeout=60)
        assert unencodable.state == states.FAILURE
        row = app.backend.store.read(unencodable.id)
        assert row.exception_type == "EncodeError"
        assert "not JSON serializable" in row.exception_message

        assert oversized.get(timeout=60) == 200_000
        assert oversized.state == states.SUCCESS
        marker = oversized.args
        assert marker == {"truncated": True, "size": marker["size"], "limit": 65536}
        assert marker["size"] > 200_000
        assert oversized.kwargs == {}

        with pytest.raises(ValueError, match="NUL"):
            garbled.get(timeout=60)
        assert garbled.state == states.FAILURE
        row = app.backend.store.read(garbled.id)
        assert row.state == states.FAILURE
        assert row.exception_type == "ValueError"
        assert row.exception_message == "bytes \\udcff and NUL \\x00 in the message"
        assert "ValueError: bytes \\udcff and NUL \\x00 in the message" in row.traceback
        for text in (row.exception_message, row.traceback):
            assert "\x00" not in text
            text.encode("utf-8")  # no lone surrogate left
        assert events_of(app, garbled.id)[-1] == "failed"


# -- 4. fast waiting -------------------------------------------------------------------------


def with_application_name(backend_url: str, name: str) -> str:
    url = make_url(backend_url.removeprefix("tq+")).update_query_dict({"application_name": name})
    return "tq+" + url.render_as_string(hide_password=False)


@pytest.mark.parametrize("backend_env", ["postgresql"], indirect=True)
def test_get_wakes_on_postgres_notify(
    backend_env: dict[str, str], start_worker: StartWorker, database_url: str
) -> None:
    start_worker(app=BACKEND_APP, env=backend_env, hostname=hostname("notify")).wait_ready()
    tag = f"tqtest-{uuid.uuid4().hex[:10]}"
    client_env = {**backend_env, "TQ_TEST_RESULT_BACKEND":
                  with_application_name(backend_env["TQ_TEST_RESULT_BACKEND"], tag)}  # fmt: skip
    monitor = sqlalchemy.create_engine(database_url)
    listening = sqlalchemy.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = :tag AND query = 'LISTEN tq_result_ready'"
    )
    try:
        with client(client_env) as app:
            stamp = app.signature("bk.stamp")
            slow = stamp.delay(2.0)
            waited: dict[str, Any] = {}
            waiter = threading.Thread(
                target=lambda: waited.update(value=slow.get(timeout=60)), daemon=True
            )
            waiter.start()

            def listeners() -> int:
                # a new transaction each time: pg_stat_activity is a snapshot per transaction
                with monitor.connect() as conn:
                    return int(conn.execute(listening, {"tag": tag}).scalar_one())

            wait_for(
                listeners,
                timeout=10,
                message="no connection of the client ran LISTEN tq_result_ready",
            )
            waiter.join(60)
            assert isinstance(waited.get("value"), float)

            gaps = []
            for _ in range(20):
                finished_at = stamp.delay(0.1).get(timeout=30)
                gaps.append(time.time() - finished_at)
            assert statistics.median(gaps) < 0.05, f"gaps (s): {sorted(gaps)}"

            members = group(stamp.clone(args=(0.1,)) for _ in range(10)).apply_async()
            finished = members.get(timeout=60)
            gap = time.time() - max(finished)
            assert len(finished) == 10
            assert gap < 1.0, f"GroupResult.get() returned {gap:.3f} s after the last task"
    finally:
        monitor.dispose()


@pytest.mark.parametrize("backend_env", ["sqlite"], indirect=True)
def test_get_polls_on_sqlite(backend_env: dict[str, str], start_worker: StartWorker) -> None:
    start_worker(app=BACKEND_APP, env=backend_env, hostname=hostname("poll")).wait_ready()
    with client(backend_env) as app:
        stamp = app.signature("bk.stamp")
        finished_at = stamp.delay(0.1).get(timeout=30)
        assert time.time() - finished_at < 1.0
        members = group(stamp.clone(args=(0.05,)) for _ in range(5)).apply_async()
        assert len(members.get(timeout=60)) == 5


# -- 6. broker events in the history ---------------------------------------------------------


def test_dead_lettered_message_is_in_the_history(
    backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    name = hostname("reject")
    env = {**backend_env, "TQ_TEST_ACKS_LATE": "1"}
    start_worker(app=BACKEND_APP, env=env, hostname=name).wait_ready()
    with client(env) as app:
        rejected = app.signature("bk.reject", args=("not for us",)).delay()

        def dead_lettered() -> list[dict[str, Any]]:
            history = app.backend.task_history(rejected.id)
            return [row for row in history if row["event"] == "dead_lettered"]

        rows = wait_for(dead_lettered, timeout=30, message="no dead_lettered history row")
        assert len(rows) == 1
        assert rows[0]["worker"] == name
        assert rows[0]["detail"]["reason"] == "rejected"
        assert rows[0]["detail"]["queue"] == "celery"

        # the pool process writes received/started in its next batch
        def with_received() -> list[str] | None:
            found = events_of(app, rejected.id)
            return found if "received" in found else None

        events = wait_for(with_received, timeout=10, message="received never written")
        assert events[0] == "received"


def test_returned_message_is_in_the_history(
    backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    env = {**backend_env, "TQ_TEST_ACKS_LATE": "1",
           "TQ_TEST_TRANSPORT_OPTIONS": json.dumps(FAST_HEARTBEAT)}  # fmt: skip
    workers = {
        w.hostname: w
        for w in [
            start_worker(app=BACKEND_APP, env=env, concurrency=1, hostname=hostname("first")),
            start_worker(app=BACKEND_APP, env=env, concurrency=1, hostname=hostname("second")),
        ]
    }
    for worker in workers.values():
        worker.wait_ready()
    with client(env) as app:
        task = app.signature("bk.sleep", args=(3.0,)).delay()

        def started_on() -> str | None:
            rows = app.backend.task_history(task.id)
            return next((r["worker"] for r in rows if r["event"] == "started"), None)

        victim: WorkerProcess = workers[str(wait_for(started_on, timeout=30))]
        victim.kill()
        survivor = next(w for w in workers.values() if w is not victim)

        assert task.get(timeout=60) == 3.0
        history = app.backend.task_history(task.id)
        events = [row["event"] for row in history]
        assert events[:2] == ["received", "started"]
        assert {row["worker"] for row in history[:2]} == {victim.hostname}
        returned = events.index("returned")
        after = history[returned:]
        assert [row["event"] for row in after] == ["returned", "received", "started", "succeeded"]
        assert {row["worker"] for row in after[1:]} == {survivor.hostname}
        assert after[0]["detail"]["queue"] == "celery"
        assert after[0]["detail"]["from_consumer"]
        assert after[0]["worker"] == survivor.hostname, (
            "the 'returned' row does not name the worker that recovered the message"
        )


def test_a_replayed_dead_letter_reopens_its_result_and_runs_again(
    backend_env: dict[str, str], start_worker: StartWorker, redis_url: str, keyprefix: str
) -> None:
    from taskqueue_backend.operations import Operations

    start_worker(app=BACKEND_APP, env=backend_env, hostname=hostname("replay")).wait_ready()
    flag = f"{keyprefix}fixed"
    with client(backend_env) as app:
        task = app.signature("bk.reject_until_fixed", args=(flag,)).delay()
        dead = Operations.from_app(app, actor="ops@example").dead_letters
        wait_for(lambda: dead.find(task.id), timeout=30, message="not dead-lettered")
        wait_for(lambda: app.AsyncResult(task.id).state == "FAILURE", timeout=30,
                 message="the rejection was not recorded as a failure")  # fmt: skip

        redis.Redis.from_url(redis_url).set(flag, "1")  # deploy the fix
        assert dead.replay([task.id], reason="handler fixed").done == 1

        assert app.AsyncResult(task.id).get(timeout=30) == "fixed"
        events = events_of(app, task.id)
        replayed = events.index("replayed")
        assert events[replayed:] == ["replayed", "received", "started", "succeeded"], events
        [row] = [r for r in app.backend.task_history(task.id) if r["event"] == "replayed"]
        assert row["detail"]["actor"] == "ops@example"
        assert row["detail"]["reason"] == "handler fixed"
        assert row["detail"]["dead_letter_reason"] == "rejected"
