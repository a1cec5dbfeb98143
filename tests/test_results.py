"""Results as a stock Celery client and stock workers see them, on PostgreSQL and SQLite.

Every state a task can end in (or pass through) is stored with Celery's extended meta and
the time of each stage; canvas primitives (chain, group, chord) complete without a
``celery.chord_unlock`` poller; each task's history lists its lifecycle events in time order;
expired results are cleaned up while their history stays; result writes survive dropped
database connections; and the result serializer settings are honoured end to end.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy
from celery import Celery, chain, chord, group, states
from celery.exceptions import ChordError, TaskRevokedError
from celery.result import AsyncResult

from taskqueue_backend.backend import deferred
from taskqueue_backend.backend.queries import event_row
from taskqueue_backend.operations import Operations
from tests.backend_app import make_app
from tests.support import StartWorker, WorkerProcess, wait_for
from tests.support.state_writes import submit_success

TIMEOUT = 30.0
#: how far apart the clocks of two processes on this machine may read at the same moment
CLOCK_SLACK = timedelta(milliseconds=50)

MakeClient = Callable[..., Celery]


@pytest.fixture
def client(backend_env: dict[str, str]) -> Iterator[MakeClient]:
    """Build client apps on this test's database; ``conf`` is applied before first use."""
    made: list[Celery] = []

    def make(**conf: Any) -> Celery:
        app = make_app(backend_env)
        app.conf.update(conf)
        made.append(app)
        return app

    yield make
    for app in made:
        app.pool.force_close_all()
        app.close()


def run_worker(
    start_worker: StartWorker,
    backend_env: dict[str, str],
    concurrency: int = 2,
    extra_conf: dict[str, Any] | None = None,
    **env: str,
) -> WorkerProcess:
    """A ready ``tests.backend_app`` worker with a known node name (``worker.hostname``)."""
    if extra_conf:
        env["TQ_TEST_EXTRA_CONF"] = json.dumps(extra_conf)
    return start_worker(
        app="tests.backend_app",
        env={**backend_env, **env},
        concurrency=concurrency,
        hostname=f"results-{uuid.uuid4().hex[:8]}@localhost",
    ).wait_ready()


def as_utc(moment: datetime | str) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive UTC)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def history(app: Celery, task_id: str) -> list[dict[str, Any]]:
    return app.backend.task_history(task_id)


def event_names(app: Celery, task_id: str) -> list[str]:
    return [row["event"] for row in history(app, task_id)]


def wait_for_events(app: Celery, task_id: str, count: int) -> list[dict[str, Any]]:
    """Wait until the task's history holds ``count`` events; return them, oldest first."""

    def enough() -> list[dict[str, Any]] | None:
        rows = history(app, task_id)
        return rows if len(rows) >= count else None

    return wait_for(
        enough,
        timeout=TIMEOUT,
        message=lambda: f"task {task_id} history: {event_names(app, task_id)}",
    )


def result_row(app: Celery, task_id: str) -> Any:
    return app.backend.store.read(task_id)


def result_names(app: Celery) -> set[str | None]:
    results = app.backend.tables.results
    with app.backend.store.engine.connect() as conn:
        return set(conn.execute(sqlalchemy.select(results.c.name).distinct()).scalars())


# -- every state ------------------------------------------------------------------------------


def test_success_stores_the_value_and_the_extended_meta(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    worker = run_worker(start_worker, backend_env)
    app = client()

    result = app.tasks["bk.add"].apply_async((2,), {"y": 3})

    assert result.get(timeout=TIMEOUT) == 5
    assert result.state == states.SUCCESS
    assert result.name == "bk.add"
    assert list(result.args) == [2]
    assert result.kwargs == {"y": 3}
    assert result.worker == worker.hostname
    assert result.retries == 0
    assert result.queue == "celery"
    assert abs(datetime.now(UTC) - as_utc(result.date_done)) < timedelta(seconds=TIMEOUT)


def test_result_row_has_the_time_of_each_stage_in_order(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    run_worker(start_worker, backend_env)
    app = client()

    result = app.tasks["bk.add"].delay(1, 1)
    result.get(timeout=TIMEOUT)

    # the worker's main process writes "received" in its next batch, maybe after the result
    row = wait_for(
        lambda: (r := result_row(app, result.id)).received_at and r,
        timeout=TIMEOUT,
        message="received_at was never written",
    )
    # this broker says when the message was published (the "sent" history event is recorded
    # only with taskqueue_record_sent); queue-wait statistics start there
    assert row.sent_at is not None, "the broker's publish time is the task's sent_at"
    assert row.started_at is not None, "a task that ran must have started_at"
    assert row.finished_at is not None
    assert as_utc(row.sent_at) <= as_utc(row.received_at) <= as_utc(row.started_at) \
        <= as_utc(row.finished_at)  # fmt: skip
    assert "sent" not in [e["event"] for e in app.backend.task_history(result.id)]


def test_failure_keeps_the_exception_and_its_traceback(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    run_worker(start_worker, backend_env)
    app = client()

    result = app.tasks["bk.fail"].delay("the input was odd")

    with pytest.raises(ValueError, match="the input was odd"):
        result.get(timeout=TIMEOUT)
    assert result.state == states.FAILURE
    assert isinstance(result.result, ValueError)
    assert "raise ValueError(message)" in result.traceback
    assert "ValueError: the input was odd" in result.traceback
    row = result_row(app, result.id)
    assert (row.exception_type, row.exception_message) == ("ValueError", "the input was odd")

    events = wait_for_events(app, result.id, 3)
    names = [e["event"] for e in events]
    # the broker dead-letters a failed task: its dead_lettered row may already follow
    assert names[:3] == ["received", "started", "failed"], names
    assert names[3:] in ([], ["dead_lettered"]), names
    assert events[2]["detail"]["exception"] == "ValueError: the input was odd"


def test_retries_then_success_are_each_in_the_history_in_time_order(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    run_worker(start_worker, backend_env)
    app = client()

    result = app.tasks["bk.retry_twice"].delay(countdown=0.5)

    assert result.get(timeout=TIMEOUT) == 2
    assert result.state == states.SUCCESS
    assert result.retries == 2
    events = wait_for_events(app, result.id, 9)
    assert [e["event"] for e in events] == [
        "received", "started", "retried",
        "received", "started", "retried",
        "received", "started", "succeeded",
    ]  # fmt: skip
    moments = [as_utc(e["at"]) for e in events]
    assert moments == sorted(moments)
    countdown = timedelta(seconds=0.5)
    for attempt, index in enumerate((2, 5)):
        started, retried, received_again = events[index - 1], events[index], events[index + 1]
        assert retried["detail"]["exception"] == f"RuntimeError: attempt {attempt}"
        # the retry's message was published while the attempt ran, before RETRY was stored
        next_eta = as_utc(retried["detail"]["next_eta"])
        assert as_utc(started["at"]) + countdown - CLOCK_SLACK <= next_eta
        assert next_eta <= as_utc(retried["at"]) + countdown
        # the countdown was honoured: the retry was not delivered before its ETA
        assert as_utc(received_again["at"]) >= next_eta - CLOCK_SLACK


def test_a_retried_event_holds_the_eta_its_message_was_given_however_late_retry_is_stored(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    from tests.backend_app import RETRY_COUNTDOWN, RETRY_PUBLISH_DELAY

    run_worker(start_worker, backend_env)
    app = client()

    result = app.tasks["bk.retry_recorded_late"].delay()

    assert result.get(timeout=TIMEOUT) == 1
    events = wait_for_events(app, result.id, 6)
    assert [e["event"] for e in events] == [
        "received", "started", "retried", "received", "started", "succeeded",
    ]  # fmt: skip
    retried, received_again = events[2], events[3]
    next_eta = as_utc(retried["detail"]["next_eta"])
    # published at least RETRY_PUBLISH_DELAY before RETRY was stored, with the countdown
    latest = as_utc(retried["at"]) + timedelta(seconds=RETRY_COUNTDOWN - RETRY_PUBLISH_DELAY)
    assert next_eta <= latest
    assert as_utc(received_again["at"]) >= next_eta - CLOCK_SLACK


def test_a_state_write_waits_for_the_batch_holding_the_tasks_earlier_events(
    client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's history is committed in the order it happened, so a reader following new rows
    (the change feed, by id) never sees ``succeeded`` before the same task's ``started``."""
    from taskqueue_backend import lifecycle
    from taskqueue_backend.backend import history as recorder

    app = client()
    backend = app.backend
    taking, go_on = threading.Event(), threading.Event()
    write_events = backend.write_events

    def slow_batch(rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        taking.set()  # the writer took this task's events and the database is slow to commit
        go_on.wait(TIMEOUT)
        write_events(rows, events)

    monkeypatch.setattr(backend, "write_events", slow_batch)
    task_id = str(uuid.uuid4())
    earlier = ((lifecycle.RECEIVED, states.RECEIVED), (lifecycle.STARTED, states.STARTED))
    for event, state in earlier:
        recorder.hold(task_id, event_row(task_id, event, state, "w@h"))
    assert taking.wait(TIMEOUT), "the history writer never took the held events"

    storing = threading.Thread(target=backend.store_result, args=(task_id, 3, states.SUCCESS))
    storing.start()
    storing.join(0.5)
    assert storing.is_alive(), "the state write did not wait for the batch being committed"
    go_on.set()
    storing.join(TIMEOUT)
    rows = history(app, task_id)
    assert [r["event"] for r in sorted(rows, key=lambda r: r["id"])] == [
        "received", "started", "succeeded"]  # fmt: skip


def test_revoking_a_waiting_task_stores_revoked(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    run_worker(start_worker, backend_env, concurrency=1)
    app = client()
    blocker = app.tasks["bk.sleep"].delay(3)
    wait_for(
        lambda: "started" in event_names(app, blocker.id),
        timeout=TIMEOUT,
        message="the long task never started",
    )
    victim = app.tasks["bk.add"].delay(1, 1)

    app.control.revoke(victim.id)

    with pytest.raises(TaskRevokedError):
        victim.get(timeout=TIMEOUT)
    assert victim.state == states.REVOKED
    assert "revoked" in event_names(app, victim.id)
    assert not {"started", "succeeded"} & set(event_names(app, victim.id))
    assert blocker.get(timeout=TIMEOUT) == 3


def test_started_is_visible_while_a_task_runs(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    worker = run_worker(start_worker, backend_env, TQ_TEST_TRACK_STARTED="1")
    app = client()

    result = app.tasks["bk.sleep"].delay(2)

    wait_for(lambda: result.state == states.STARTED, timeout=TIMEOUT,
             message=lambda: f"state stayed {result.state}")  # fmt: skip
    row = result_row(app, result.id)
    assert row.started_at is not None and row.finished_at is None
    assert row.worker == worker.hostname
    assert result.get(timeout=TIMEOUT) == 2
    assert result.state == states.SUCCESS


# -- canvas -----------------------------------------------------------------------------------


def test_chain_members_record_their_parent_and_root(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    run_worker(start_worker, backend_env)
    app = client()
    add = app.tasks["bk.add"]

    last = (add.s(1, 2) | add.s(3) | add.s(4)).apply_async()

    assert last.get(timeout=TIMEOUT) == 10
    middle, first = last.parent, last.parent.parent
    # Celery publishes a chain's next task before it stores the current task's result
    wait_for(lambda: first.ready() and middle.ready(), timeout=TIMEOUT,
             message="the chain's earlier results were never stored")  # fmt: skip
    metas = {r.id: app.backend.get_task_meta(r.id, cache=False) for r in (first, middle, last)}
    assert metas[first.id]["parent_id"] is None
    assert metas[middle.id]["parent_id"] == first.id
    assert metas[last.id]["parent_id"] == middle.id
    assert {m["root_id"] for m in metas.values()} == {first.id}
    assert [m["result"] for m in metas.values()] == [3, 6, 10]


def test_group_members_record_their_group(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    run_worker(start_worker, backend_env)
    app = client()
    add = app.tasks["bk.add"]

    result = group(add.s(i, i) for i in range(4)).apply_async()

    assert result.get(timeout=TIMEOUT) == [0, 2, 4, 6]
    for member in result.results:
        meta = app.backend.get_task_meta(member.id, cache=False)
        assert meta["group_id"] == result.id
        assert meta["name"] == "bk.add"


def test_chords_complete_without_chord_unlock(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    worker = run_worker(start_worker, backend_env)
    app = client()
    add, tsum = app.tasks["bk.add"], app.tasks["bk.tsum"]

    ten = chord([add.s(i, i) for i in range(10)], tsum.s()).apply_async()
    nested = chain(add.s(1, 1), chord([add.s(i) for i in range(5)], tsum.s())).apply_async()

    assert ten.get(timeout=TIMEOUT) == sum(2 * i for i in range(10))
    assert nested.get(timeout=TIMEOUT) == sum(2 + i for i in range(5))
    assert "celery.chord_unlock" not in result_names(app)
    assert "celery.chord_unlock" not in worker.log_text()


def test_a_failing_chord_member_fails_the_chord_naming_it(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    worker = run_worker(start_worker, backend_env)
    app = client()
    add, fail, tsum = app.tasks["bk.add"], app.tasks["bk.fail"], app.tasks["bk.tsum"]

    result = chord([add.s(1, 1), fail.s("member broke"), add.s(2, 2)], tsum.s()).apply_async()

    # a plain get() may re-raise the member's own error when it sees the failed header first
    # (Celery's follow_parents); the chord's callback result itself holds the ChordError
    with pytest.raises(ChordError) as raised:
        result.get(timeout=TIMEOUT, follow_parents=False)
    failing = result.parent.results[1]
    assert f"Dependency {failing.id} raised" in str(raised.value)
    assert "member broke" in str(raised.value)
    assert result.state == states.FAILURE
    assert "celery.chord_unlock" not in worker.log_text()


# -- history at publish time ------------------------------------------------------------------


def test_record_sent_writes_a_pending_row_at_publish_before_any_worker(
    client: MakeClient,
) -> None:
    app = client(taskqueue_record_sent=True)

    result = app.tasks["bk.add"].apply_async((1, 2))

    events = history(app, result.id)
    assert [(e["event"], e["state"]) for e in events] == [("sent", states.PENDING)]
    row = result_row(app, result.id)
    assert row is not None, "no result row was written at publish time"
    assert (row.state, row.name, row.queue) == (states.PENDING, "bk.add", "celery")
    assert as_utc(row.sent_at) == as_utc(events[0]["at"])
    assert row.received_at is None and row.finished_at is None
    assert result.state == states.PENDING


def test_record_sent_follows_the_publishing_app_not_the_newest_backend(
    client: MakeClient,
) -> None:
    recording = client(taskqueue_record_sent=True)
    recording.backend  # noqa: B018 - its backend exists before the other app's
    other = client()
    other.backend  # noqa: B018 - a second app in the same process, not recording

    result = recording.tasks["bk.add"].apply_async((1, 2))

    assert event_names(recording, result.id) == ["sent"]


# -- expiry and forget ------------------------------------------------------------------------


def finish_and_age(app: Celery, result: AsyncResult, age: timedelta) -> None:
    """Wait until ``result`` has finished, its history has landed (so nothing writes its row
    later), and it finished more than ``age`` ago."""
    result.get(timeout=TIMEOUT)
    wait_for_events(app, result.id, 3)

    def old_enough() -> bool:
        return datetime.now(UTC) - as_utc(result_row(app, result.id).finished_at) > age

    wait_for(old_enough, timeout=TIMEOUT, interval=0.1, message=f"{result.id} stayed young")


def test_cleanup_removes_expired_results_and_keeps_their_history(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    run_worker(start_worker, backend_env, extra_conf={"result_expires": 1})
    app = client(result_expires=1)
    add = app.tasks["bk.add"]
    expired = add.delay(1, 1)
    finish_and_age(app, expired, timedelta(seconds=1.2))
    fresh_id = uuid.uuid4().hex
    app.backend.store_result(fresh_id, "just finished", states.SUCCESS)

    app.backend.cleanup()

    assert result_row(app, expired.id) is None, "an expired result survived cleanup()"
    assert result_row(app, fresh_id) is not None, "cleanup() removed a result not yet expired"
    assert event_names(app, expired.id) == ["received", "started", "succeeded"]

    # the periodic task does the same inside a worker that has result_expires set
    expired_too = add.delay(2, 2)
    finish_and_age(app, expired_too, timedelta(seconds=1.2))
    app.tasks["celery.backend_cleanup"].delay().get(timeout=TIMEOUT)
    assert result_row(app, expired_too.id) is None, "celery.backend_cleanup kept an expired result"
    assert event_names(app, expired_too.id) == ["received", "started", "succeeded"]


def test_forget_removes_the_result_for_good(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    # a long flush interval makes the worker's "received" batch land after the forget
    run_worker(start_worker, backend_env, extra_conf={"taskqueue_history_flush_interval": 2})
    app = client()
    result = app.tasks["bk.add"].delay(3, 3)
    assert result.get(timeout=TIMEOUT) == 6

    result.forget()

    assert result_row(app, result.id) is None
    wait_for(lambda: "received" in event_names(app, result.id), timeout=TIMEOUT,
             message="the worker's received event was never written")  # fmt: skip
    row = result_row(app, result.id)
    assert row is None, f"a late history batch brought the forgotten result back as {row.state}"
    assert result.state == states.PENDING


# -- serializers ------------------------------------------------------------------------------


def test_pickle_result_serializer_round_trips_a_set(
    client: MakeClient, backend_env: dict[str, str], start_worker: StartWorker
) -> None:
    pickled = {"result_serializer": "pickle", "result_accept_content": ["pickle", "json"]}
    run_worker(start_worker, backend_env, extra_conf=pickled)
    app = client(**pickled)

    result = app.tasks["bk.as_set"].delay([3, 1, 3, 2])

    value = result.get(timeout=TIMEOUT)
    assert isinstance(value, set) and value == {1, 2, 3}
    assert result_row(app, result.id).content_type == "application/x-python-serialize"


# -- dropped database connections (PostgreSQL) ------------------------------------------------


def url_with_application_name(database_url: str, name: str) -> str:
    url = sqlalchemy.make_url(database_url).update_query_dict({"application_name": name})
    return url.render_as_string(hide_password=False)


def terminate_connections(database_url: str, application_name: str) -> int:
    """Terminate (server side) every connection opened under ``application_name``; wait for
    them to be gone; return how many there were. Other clients' connections are untouched."""
    admin = sqlalchemy.create_engine(database_url, poolclass=sqlalchemy.pool.NullPool)
    named = sqlalchemy.text(
        "SELECT pid FROM pg_stat_activity WHERE application_name = :name "
        "AND pid <> pg_backend_pid()"
    )
    try:
        with admin.connect() as conn:
            pids = list(conn.execute(named, {"name": application_name}).scalars())
            for pid in pids:
                conn.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            conn.commit()
        # (a busy client may already have opened new connections under the same name)
        wait_for(lambda: not _still_there(admin, pids), timeout=TIMEOUT,
                 message="terminated connections are still listed")  # fmt: skip
    finally:
        admin.dispose()
    return len(pids)


def _still_there(engine: sqlalchemy.Engine, pids: list[int]) -> bool:
    listed = sqlalchemy.text("SELECT pid FROM pg_stat_activity WHERE pid = ANY(:pids)")
    with engine.connect() as conn:
        return bool(list(conn.execute(listed, {"pids": pids})))


def pg_client_env(database_url: str, schema: str, application_name: str) -> dict[str, str]:
    url = url_with_application_name(database_url, application_name)
    return {"TQ_TEST_RESULT_BACKEND": f"tq+{url}", "TQ_TEST_DB_SCHEMA": schema}


def test_always_retry_survives_connections_terminated_by_the_server(
    pg_schema: str, database_url: str
) -> None:
    name = f"tqtest-retry-{uuid.uuid4().hex[:8]}"
    app = make_app(pg_client_env(database_url, pg_schema, name))
    # without pre-ping the pool hands out the dead connection, so the write itself must recover
    app.conf.update(result_backend_always_retry=True, result_backend_max_retries=5,
                    database_engine_options={"pool_pre_ping": False})  # fmt: skip
    backend = app.backend
    try:
        first, second = uuid.uuid4().hex, uuid.uuid4().hex
        backend.store_result(first, 1, states.SUCCESS)
        assert terminate_connections(database_url, name) >= 1

        backend.store_result(second, 2, states.SUCCESS)

        assert backend.get_task_meta(second, cache=False)["result"] == 2
        assert backend.get_task_meta(first, cache=False)["result"] == 1

        # and the error a dropped connection raises is one the backend retries
        with backend.store.engine.connect() as conn:
            terminate_connections(database_url, name)
            with pytest.raises(sqlalchemy.exc.DBAPIError) as raised:
                conn.execute(sqlalchemy.text("SELECT 1"))
        assert backend.exception_safe_to_retry(raised.value)
    finally:
        backend.store.engine.dispose()
        app.close()


def test_database_engine_options_may_carry_connect_args(pg_schema: str, database_url: str) -> None:
    name = f"tqtest-args-{uuid.uuid4().hex[:8]}"
    app = make_app({"TQ_TEST_RESULT_BACKEND": f"tq+{database_url}",
                    "TQ_TEST_DB_SCHEMA": pg_schema})  # fmt: skip
    app.conf.database_engine_options = {"connect_args": {"application_name": name}}
    try:
        task_id = uuid.uuid4().hex
        app.backend.store_result(task_id, "stored", states.SUCCESS)

        assert app.backend.get_task_meta(task_id, cache=False)["result"] == "stored"
        assert terminate_connections(database_url, name) >= 1, "connect_args were not applied"
    finally:
        app.close()


# -- deferred state writes (tasks acknowledged on start) --------------------------------------
# Their writes go to a writer thread: none may be lost when the pool process stops; late
# acknowledgement, chord members and eager calls still write synchronously; the writer outlives
# dropped database connections.


def stored_states(app: Celery) -> dict[str, str]:
    results = app.backend.tables.results
    with app.backend.store.engine.connect() as conn:
        query = sqlalchemy.select(results.c.task_id, results.c.state)
        return {task_id: state for task_id, state in conn.execute(query)}


def test_a_stopping_worker_commits_every_queued_write_first(
    start_worker: StartWorker, backend_env: dict[str, str], client: MakeClient
) -> None:
    app = client()
    sent = [app.send_task("bk.add", (i, i)).id for i in range(400)]
    worker = run_worker(start_worker, backend_env, TQ_TEST_PREFETCH="1")
    wait_for(lambda: len(stored_states(app)) >= 50, timeout=TIMEOUT, message="first results")
    # billiard (>= 4.2.1) keeps a pool process up to 30 s at shutdown when the main process has
    # not read its last result yet; a warm shutdown may take that long, and must still be clean
    assert worker.stop(timeout=60) == 0, worker.log_tail()

    # acknowledged on start: every message that left the queue ran, so its result must be
    # there; the rest are still queued (the warm shutdown returned what it had prefetched)
    stored = stored_states(app)
    inspector = Operations.from_app(app)
    queued = {i for i in sent if any(m.state == "ready" for m in inspector.queues.find(i))}
    assert set(stored) <= set(sent)
    assert all(state == states.SUCCESS for state in stored.values())
    assert set(stored) | queued == set(sent), (len(stored), len(queued), worker.log_tail())
    # a task both stored and queued ran and was then put back by Celery's own shutdown: when
    # billiard holds a pool process, the main process never reads that task's "accepted"
    # message and restores its (already acknowledged) message; at most one per pool process
    assert len(set(stored) & queued) <= 2, worker.log_tail()
    assert inspector.queues.stats("celery").ready == len(queued)
    assert "could not store" not in worker.log_text()


def test_which_writes_may_be_deferred(backend_env: dict[str, str], client: MakeClient) -> None:
    app = client()
    backend = app.backend
    on_postgresql = backend.store.dialect == "postgresql"  # SQLite always writes at once

    class Request:
        def __init__(self, task: str, **extra: object) -> None:
            self.task, self.chord, self.is_eager = task, None, False
            self.__dict__.update(extra)

    def deferred(request: object, backend: Any = backend) -> bool:
        """The rule for a write made by the thread that runs the task."""
        return bool(backend.writes._may_defer(request, running=True))

    assert deferred(Request("bk.add")) is on_postgresql
    assert not deferred(Request("bk.reject"))  # acks_late=True
    assert not deferred(Request("bk.add", chord={"task": "bk.tsum"}))
    assert not deferred(Request("bk.add", is_eager=True))
    assert not deferred(Request("no.such.task"))
    assert not deferred(None)
    late = client(task_acks_late=True)
    assert not deferred(Request("bk.add"), late.backend)
    off = client(taskqueue_deferred_writes=False)
    assert not deferred(Request("bk.add"), off.backend)
    # outside a running task only a worker's writes go to the writer thread (this is a client)
    assert not backend.writes._may_defer(Request("bk.add"), running=False)


def transactions_of(app: Celery, task_ids: list[str]) -> int:
    """How many transactions wrote these tasks' result rows (PostgreSQL's ``xmin``)."""
    results = app.backend.tables.results
    with app.backend.store.engine.connect() as conn:
        query = sqlalchemy.select(
            sqlalchemy.func.count(sqlalchemy.distinct(sqlalchemy.literal_column("xmin::text")))
        ).where(results.c.task_id.in_(task_ids))
        return int(conn.execute(query).scalar_one())


def queue_together(
    writer: deferred.DeferredWriter, app: Celery, task_ids: list[str], bad: str | None = None
) -> None:
    """Deferred SUCCESS writes of ``task_ids`` (``bad``'s too long for its column)."""
    for task_id in task_ids:
        submit_success(writer, app.backend, task_id, name="x" * 300 if task_id == bad else "bk.add")


@pytest.mark.parametrize("backend_env", ["postgresql"], indirect=True)
def test_deferred_writes_queued_together_commit_together_and_a_bad_one_alone(
    client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    app = client()
    writer = deferred.DeferredWriter()
    gate = threading.Event()

    def held() -> None:  # the writes pile up behind this one, as behind a slow commit
        gate.wait(30)

    writer.submit("gate", held)
    good = [f"together-{uuid.uuid4()}" for _ in range(30)]
    queue_together(writer, app, good)
    gate.set()
    assert writer.drain(30)
    assert set(stored_states(app)) >= set(good)
    assert transactions_of(app, good) == 1  # one commit for all thirty

    gate.clear()
    writer.submit("gate", held)
    mixed = [f"mixed-{uuid.uuid4()}" for _ in range(10)]
    queue_together(writer, app, mixed, bad=mixed[4])
    gate.set()
    assert writer.drain(30)
    writer.stop()
    written = [task_id for task_id in mixed if task_id != mixed[4]]
    stored = stored_states(app)
    assert set(written) <= set(stored) and mixed[4] not in stored
    assert transactions_of(app, written) == len(written)  # the batch failed: each alone
    assert all(event_names(app, task_id) == ["succeeded"] for task_id in written)
    assert f"could not store the state of task {mixed[4]}" in caplog.text


@pytest.mark.parametrize("backend_env", ["sqlite"], indirect=True)
def test_a_workers_main_process_knows_it_is_one(
    start_worker: StartWorker, backend_env: dict[str, str], client: MakeClient
) -> None:
    """Its writes (a lost, timed-out, revoked or expired task) must never wait on its event
    loop; under ``-P threads`` tasks run in the main process, whose backend is created only
    after the worker's first signals."""
    from taskqueue_backend.backend import outage

    app = client()
    start_worker(app="tests.backend_app", env=backend_env, pool="threads").wait_ready()
    assert app.signature("bk.in_worker").delay().get(timeout=30) is True
    assert outage.in_worker() is False, "a client is not a worker"


def test_deferred_writes_outlive_dropped_database_connections(
    start_worker: StartWorker, backend_env: dict[str, str], client: MakeClient,
    database_url: str,
) -> None:  # fmt: skip
    if not backend_env["TQ_TEST_RESULT_BACKEND"].startswith("tq+postgresql"):
        return  # SQLite has no server connections to drop
    name = "tq-deferred-test"
    named_url = url_with_application_name(database_url, name)
    env = {**backend_env, "TQ_TEST_RESULT_BACKEND": "tq+" + named_url}
    app = client()
    worker = run_worker(start_worker, env)
    first = [app.send_task("bk.add", (i, 1)).id for i in range(100)]
    wait_for(lambda: len(stored_states(app)) >= 20, timeout=TIMEOUT, message="first results")
    assert terminate_connections(database_url, name) > 0
    second = [app.send_task("bk.add", (i, 2)).id for i in range(100)]
    wait_for(
        lambda: len(stored_states(app)) == len(first) + len(second),
        timeout=TIMEOUT,
        message=lambda: f"{len(stored_states(app))} results; {worker.log_tail()}",
    )
    assert set(stored_states(app).values()) == {states.SUCCESS}
