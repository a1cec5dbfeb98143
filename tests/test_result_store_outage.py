"""A result-store outage loses no task: real workers, a PostgreSQL of the module's own that the
tests crash and restart (``pg_ctl -m immediate``), a redis-server of its own.

- PostgreSQL restarted in the middle of 500 tasks (``task_track_started``, prefetch 4, three
  processes or threads, acks late and acks on start): every task runs, none stays STARTED or
  PENDING, every history ends in ``succeeded`` once, nothing is left in the broker or the dead
  letters, a task runs twice only if it was running while the store was down, and the
  worker's ``/readyz`` says the store is down while it is;
- an outage longer than the retry window: the tasks that ran keep their outcome in the dead
  letters (reason ``result_store_unavailable``, the outcome in the detail), the ones that had
  not started did not run and went back to their queue, and a replay of the dead letters
  runs them again once the store is back.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sqlalchemy
from celery import Celery, states

from taskqueue_backend.embedded import EmbeddedRedis, free_port
from taskqueue_backend.operations import Filter, Operations
from taskqueue_backend.unrecorded import REASON
from tests.backend_app import read_runs
from tests.support import StartWorker, WorkerProcess, wait_for
from tests.support.exported_metrics import exporter_check
from tests.support.postgres import EmbeddedPostgres, find_bindir
from tests.test_backend_faults import client

BACKEND_APP = "tests.backend_app"
TASKS = 500
UNREACHABLE = "result store unreachable"


@pytest.fixture(scope="module")
def postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this module's own: the tests crash and restart it."""
    if find_bindir() is None:
        pytest.skip("PostgreSQL binaries (initdb, postgres, pg_ctl) are not installed")
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A redis-server of this module's own (each test uses its own key prefix on it)."""
    server = EmbeddedRedis(dir=str(tmp_path_factory.mktemp("outage-redis"))).start()
    yield server
    server.stop()


@pytest.fixture
def schema(postgres: EmbeddedPostgres) -> Iterator[str]:
    name = f"outage_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(postgres.url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{name}"'))
    engine.dispose()
    yield name
    if postgres.process is None:  # a failed test may leave it stopped
        postgres.start()
    engine = sqlalchemy.create_engine(postgres.url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


def outage_env(
    broker: EmbeddedRedis, postgres: EmbeddedPostgres, schema: str, acks_late: bool, **conf: Any
) -> dict[str, str]:
    return {
        "TQ_TEST_REDIS_URL": broker.url,
        "TQ_TEST_KEYPREFIX": f"outage-{uuid.uuid4().hex[:8]}:",
        "TQ_TEST_RESULT_BACKEND": f"tq+{postgres.url}",
        "TQ_TEST_DB_SCHEMA": schema,
        "TQ_TEST_TRACK_STARTED": "1",
        "TQ_TEST_ACKS_LATE": "1" if acks_late else "0",
        "TQ_TEST_PREFETCH": "4",
        "TQ_TEST_EXTRA_CONF": json.dumps(conf),
    }


def readyz(port: int) -> tuple[int, str]:
    return exporter_check(port, "/readyz")


def runs_of(env: dict[str, str]) -> list[dict[str, Any]]:
    client_ = redis.Redis.from_url(env["TQ_TEST_REDIS_URL"])
    try:
        return read_runs(client_, env["TQ_TEST_KEYPREFIX"])
    finally:
        client_.close()


def states_of(app: Celery, ids: list[str]) -> Counter[str]:
    found = {row.task_id: row.state for row in app.backend.store.read_many(ids)}
    return Counter(found.get(task_id, "(no row)") for task_id in ids)


def stop_for(worker: WorkerProcess, postgres: EmbeddedPostgres) -> tuple[float, float]:
    """Crash PostgreSQL, wait until the worker met the outage, start it again: (stopped,
    restarted) as wall-clock times."""
    stopped = time.time()
    postgres.stop_immediately()
    wait_for(lambda: UNREACHABLE in worker.log_text(), timeout=30,
             message=lambda: f"no write met the outage:\n{worker.log_tail()}")  # fmt: skip
    return stopped, time.time()


@pytest.mark.parametrize(
    ("pool", "acks_late"),
    [("prefork", True), ("prefork", False), ("threads", True), ("threads", False)],
    ids=["prefork-acks-late", "prefork-acks-on-start", "threads-acks-late",
         "threads-acks-on-start"],
)  # fmt: skip
def test_an_immediate_postgres_restart_mid_run_loses_no_task(
    pool: str, acks_late: bool, start_worker: StartWorker, postgres: EmbeddedPostgres,
    broker: EmbeddedRedis, schema: str,
) -> None:  # fmt: skip
    env = outage_env(broker, postgres, schema, acks_late)
    port = free_port()
    with client(env) as app:
        app.backend.store.read("warm-up")  # the tables exist before the worker races for them
        worker = start_worker(app=BACKEND_APP, env={**env, "TQ_WORKER_METRICS_PORT": str(port)},
                              concurrency=3, pool=pool)  # fmt: skip
        worker.wait_ready()
        run = app.signature("bk.record_run")
        ids = [run.delay(seq, 0.01).id for seq in range(TASKS)]
        wait_for(lambda: len(runs_of(env)) >= TASKS // 4, timeout=60, message="too slow to start")

        stopped, _ = stop_for(worker, postgres)
        status, text = wait_for(lambda: (r := readyz(port))[0] == 503 and r, timeout=30,
                                message=lambda: f"/readyz while down: {readyz(port)}")  # fmt: skip
        assert "result store unreachable" in text
        time.sleep(1.0)  # a one-second outage, as a restart or a failover gives
        restarted = time.time()
        postgres.start()

        wait_for(lambda: states_of(app, ids)[states.SUCCESS] == TASKS, timeout=180, interval=0.5,
                 message=lambda: f"states after the restart: {states_of(app, ids)}; worker "
                 f"log tail:\n{worker.log_tail()}")  # fmt: skip
        wait_for(lambda: readyz(port)[0] == 200, timeout=30,
                 message=lambda: f"/readyz after the restart: {readyz(port)}")  # fmt: skip

        runs = runs_of(env)
        counts = Counter(entry["seq"] for entry in runs)
        assert [seq for seq in range(TASKS) if counts[seq] == 0] == [], "tasks that never ran"
        during = {entry["seq"] for entry in runs
                  if entry["start"] <= restarted and entry["end"] >= stopped}  # fmt: skip
        duplicates = {seq for seq, n in counts.items() if n > 1}
        assert duplicates <= during, "a task ran twice that was not running during the outage"

        def unfinished_histories() -> dict[str, list[str]]:
            found = {}
            for task_id in ids:
                events = [row["event"] for row in app.backend.task_history(task_id)]
                if events.count("succeeded") != 1 or events[-1] != "succeeded":
                    found[task_id] = events
            return found

        # rows held while the store was down are written by the history writer a moment later
        wait_for(lambda: not unfinished_histories(), timeout=30, interval=0.5,
                 message=lambda: f"histories not ending in one succeeded: "
                 f"{dict(list(unfinished_histories().items())[:5])}")  # fmt: skip

        ops = Operations.from_urls(broker.url, transport_options={
            "global_keyprefix": env["TQ_TEST_KEYPREFIX"]})  # fmt: skip
        try:
            queue = ops.queues.stats("celery")
            assert (queue.ready, queue.delayed, queue.inflight, queue.dead) == (0, 0, 0, 0)
        finally:
            ops.close()
        print(
            f"\n{pool}, acks_late={acks_late}: {TASKS} tasks, 1 restart, lost 0, stuck 0, "
            f"duplicates {len(duplicates)}, running during the outage {len(during)}"
        )


@pytest.mark.parametrize("acks_late", [True, False], ids=["acks-late", "acks-on-start"])
def test_an_outage_longer_than_the_window_keeps_outcomes_in_the_dead_letters(
    acks_late: bool, start_worker: StartWorker, postgres: EmbeddedPostgres, broker: EmbeddedRedis,
    schema: str,
) -> None:  # fmt: skip
    window = 2.0
    env = outage_env(broker, postgres, schema, acks_late,
                     taskqueue_result_store_retry_window=window)  # fmt: skip
    with client(env) as app:
        app.backend.store.read("warm-up")
        worker = start_worker(app=BACKEND_APP, env=env, concurrency=3)
        worker.wait_ready()
        run = app.signature("bk.record_run")
        running = [run.delay(seq, 1.0) for seq in range(3)]  # one per process
        waiting = [run.delay(seq, 0.0) for seq in range(3, 6)]
        ids = [r.id for r in running]
        wait_for(lambda: states_of(app, ids)[states.STARTED] == 3, timeout=30,
                 message=lambda: f"not all running: {states_of(app, ids)}")  # fmt: skip

        stop_for(worker, postgres)
        # the running ones finish, retry their outcome for the window, then keep it
        ops = Operations.from_app(app, actor="operator")
        try:
            kept = wait_for(lambda: len(found := ops.dead_letters.page(Filter(reason=REASON))
                                        .items) == 3 and found, timeout=30,
                            message=lambda: f"dead letters: {ops.dead_letters.stats().by_reason};"
                            f" log tail:\n{worker.log_tail()}")  # fmt: skip
            # the waiting ones could not record STARTED within the window: they did not run
            wait_for(lambda: worker.log_text().count("was not started") >= 3, timeout=30,
                     message=lambda: f"log tail:\n{worker.log_tail()}")  # fmt: skip
            assert sorted(e["seq"] for e in runs_of(env)) == [0, 1, 2]
            postgres.start()

            assert {e.task_id for e in kept} == set(ids)
            for entry in kept:
                assert entry.detail.startswith("SUCCESS: "), entry.detail
                assert "not recorded" in entry.detail
                assert entry.exc_type and "OperationalError" in entry.exc_type
            for result in waiting:  # back in their queue, they run once the store answers
                assert result.get(timeout=60) in (3, 4, 5)

            done = ops.dead_letters.replay(flt=Filter(reason=REASON), reason="store is back")
            assert done.done == 3
            assert sorted(r.get(timeout=60) for r in running) == [0, 1, 2]
        finally:
            ops.close()
        counts = Counter(e["seq"] for e in runs_of(env))
        assert counts == {0: 2, 1: 2, 2: 2, 3: 1, 4: 1, 5: 1}, "ran again only when replayed"
        history = [row["event"] for row in app.backend.task_history(ids[0])]
        assert "dead_lettered" in history and history[-3:] == ["received", "started",
                                                               "succeeded"], history  # fmt: skip
        assert history[history.index("dead_lettered") :].count("replayed") == 1, history
