"""The worker registry (``Operations.workers``) fed by the broker's heartbeats.

- a live worker is online with its node name, pid, queues, concurrency and counts;
- SIGKILL under a load of 10,000 tasks: the worker turns stale, then offline within the
  window; every task completes, and only the ones it held run twice — none lost; its
  offline entry counts the returned messages and the audit log names them;
- a worker paused past its window turns offline and comes back online when resumed;
- a clean stop leaves an offline entry with reason ``stopped``; forgetting removes it;
- ``taskqueue workers`` and ``taskqueue status``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from taskqueue_backend.operations import Conflict, NotFound, WorkerInfo
from taskqueue_backend.operations.workers import Workers
from tests.app import make_app, read_log
from tests.support import StartWorker, WorkerProcess, operations_for, wait_for

QUEUE = "celery"
WINDOW = {"heartbeat_interval": 0.5, "heartbeat_timeout": 3.0}
REPO_ROOT = Path(__file__).resolve().parent.parent
TASKQUEUE = Path(sys.executable).parent / "taskqueue"
LOAD = 10_000


@pytest.fixture
def client(redis_url: str, keyprefix: str) -> Iterator[Celery]:
    app = make_app(redis_url, keyprefix, **WINDOW)
    yield app
    app.close()


def registry(redis_url: str, keyprefix: str) -> Workers:
    return operations_for(redis_url, keyprefix, **WINDOW).acting_as("tester").workers


def env(**extra: str) -> dict[str, str]:
    return {"TQ_TEST_TRANSPORT_OPTIONS": json.dumps(WINDOW), **extra}


def entry_of(workers: Workers, worker: WorkerProcess) -> WorkerInfo | None:
    found = [w for w in workers.all() if w.pid == worker.pid]
    return found[0] if found else None


def test_a_live_worker_is_online_with_its_details(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker
) -> None:
    worker = start_worker(env=env(), concurrency=2, hostname="alive@localhost").wait_ready()
    for i in range(3):
        client.send_task("tests.app.record", (f"r{i}",))
    client.send_task("tests.app.fail_without_dead_letter", ("f",))
    workers = registry(redis_url, keyprefix)
    info = wait_for(
        lambda: (w := entry_of(workers, worker)) and w.processed == 4 and w.failed == 1 and w,
        timeout=30,
        message=lambda: f"counts not reported: {workers.all()}",
    )
    assert (info.state, info.hostname, info.queues, info.concurrency) == (
        "online", "alive@localhost", [QUEUE], 2)  # fmt: skip
    assert info.active == 0 and info.last_heartbeat
    assert time.time() - info.last_heartbeat.timestamp() < 3
    assert info.seconds_since_heartbeat is not None and info.seconds_since_heartbeat < 3
    with pytest.raises(Conflict, match="not offline"):
        workers.forget("alive@localhost")


def test_sigkill_under_load_turns_the_worker_offline_and_loses_nothing(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    doomed = start_worker(env=env(TQ_TEST_ACKS_LATE="1"), hostname="doomed@localhost")
    survivor = start_worker(env=env(TQ_TEST_ACKS_LATE="1"), hostname="survivor@localhost")
    doomed.wait_ready()
    survivor.wait_ready()
    task = client.tasks["tests.app.record"]
    with client.producer_or_acquire() as producer, producer.batch():
        for i in range(LOAD):
            task.apply_async((f"t{i}",), producer=producer)
    wait_for(lambda: redis_client.llen(f"{keyprefix}log") >= LOAD // 5, timeout=120,
             message="the load did not start")  # fmt: skip
    workers = registry(redis_url, keyprefix)
    doomed.kill(signal.SIGKILL)
    killed_at = time.monotonic()

    seen: list[str] = []

    def offline() -> WorkerInfo | None:
        info = entry_of(workers, doomed)
        if info is not None and (not seen or seen[-1] != info.state):
            seen.append(info.state)
        return info if info is not None and info.state == "offline" else None

    gone = wait_for(offline, timeout=WINDOW["heartbeat_timeout"] * 2 + 10, interval=0.05,
                    message=lambda: f"not offline; states seen: {seen}")  # fmt: skip
    took = time.monotonic() - killed_at
    assert seen[0] in ("online", "stale"), seen  # stale lasts until the survivor's next beat
    assert took <= WINDOW["heartbeat_timeout"] + WINDOW["heartbeat_interval"] + 5, took
    assert gone.offline_reason == "died" and gone.recovered_by == "survivor@localhost"

    def all_ran() -> Counter[str] | None:
        runs = Counter(e["label"] for e in read_log(redis_client, keyprefix))
        return runs if len(runs) == LOAD else None

    runs = wait_for(all_ran, timeout=300, message="not every task ran")
    inspector = workers.ops
    wait_for(lambda: inspector.queues.stats(QUEUE).inflight == 0, timeout=30)
    twice = {label for label, n in runs.items() if n > 1}
    redelivered = {e["label"] for e in read_log(redis_client, keyprefix) if e["redelivered"]}
    assert twice <= redelivered, "a task that was never redelivered ran twice"
    assert max(runs.values()) <= 2
    final = entry_of(workers, doomed)
    assert final is not None
    assert final.returned == len(redelivered), (final.returned, len(redelivered))
    stats = inspector.queues.stats(QUEUE)
    assert (stats.ready, stats.inflight, stats.dead) == (0, 0, 0)

    [audit] = [e for e in workers.ops.audit.entries().items if e.action == "worker.offline"]
    assert audit.target == gone.consumer_id and audit.actor == "survivor@localhost"
    assert len(audit.detail["returned"]) == final.returned
    assert survivor.running


def test_a_killed_worker_with_no_live_peer_is_stale_until_the_control_plane_recovers_it(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    lonely = start_worker(env=env(TQ_TEST_ACKS_LATE="1"), concurrency=1,
                          hostname="lonely@localhost").wait_ready()  # fmt: skip
    task_id = client.send_task("tests.app.sleep_then_record", ("held", 30.0)).id
    inspector = operations_for(redis_url, keyprefix, **WINDOW)
    wait_for(lambda: [m for m in inspector.queues.find(task_id) if m.state == "inflight"],
             timeout=30)  # fmt: skip
    workers = registry(redis_url, keyprefix)
    lonely.kill(signal.SIGKILL)
    stale = wait_for(lambda: (w := entry_of(workers, lonely)) and w.state == "stale" and w,
                     timeout=10, message=lambda: f"not stale: {workers.all()}")  # fmt: skip
    assert stale.hostname == "lonely@localhost"
    time.sleep(WINDOW["heartbeat_interval"] * 2)
    assert entry_of(workers, lonely).state == "stale", "nobody alive should have recovered it"

    [recovered] = workers.recover_stale()
    assert recovered.returned == [task_id]
    assert workers.recover_stale() == [], "a second recovery finds nothing"
    gone = entry_of(workers, lonely)
    assert (gone.state, gone.offline_reason, gone.returned, gone.recovered_by) == (
        "offline", "died", 1, "tester")  # fmt: skip
    [location] = inspector.queues.find(task_id)
    assert (location.state, location.recoveries) == ("ready", 1)
    [audit] = [e for e in workers.ops.audit.entries().items if e.action == "worker.offline"]
    assert audit.detail["returned"] == [task_id] and audit.actor == "tester"


def test_a_paused_worker_turns_offline_and_comes_back_when_resumed(
    redis_url: str, keyprefix: str, start_worker: StartWorker
) -> None:
    paused = start_worker(env=env(), hostname="paused@localhost").wait_ready()
    start_worker(env=env(), hostname="watcher@localhost").wait_ready()
    workers = registry(redis_url, keyprefix)
    wait_for(lambda: entry_of(workers, paused), timeout=10, message="never registered")
    paused.kill(signal.SIGSTOP)
    try:
        wait_for(lambda: (w := entry_of(workers, paused)) and w.state == "offline", timeout=20,
                 message=lambda: f"not offline: {workers.all()}")  # fmt: skip
    finally:
        paused.kill(signal.SIGCONT)
    wait_for(lambda: (w := entry_of(workers, paused)) and w.state == "online", timeout=20,
             message=lambda: f"not back online: {entry_of(workers, paused)}")  # fmt: skip
    assert [w.state for w in workers.all() if w.pid == paused.pid] == ["online"]


def test_a_stopped_worker_is_offline_until_forgotten(
    redis_url: str, keyprefix: str, start_worker: StartWorker
) -> None:
    worker = start_worker(env=env(), hostname="leaving@localhost").wait_ready()
    workers = registry(redis_url, keyprefix)
    wait_for(lambda: entry_of(workers, worker), timeout=10)
    assert worker.stop() == 0
    info = wait_for(lambda: (w := entry_of(workers, worker)) and w.state == "offline" and w,
                    timeout=10)  # fmt: skip
    assert info.offline_reason == "stopped" and info.returned == 0

    assert workers.forget("leaving@localhost", reason="scaled down") == [info.consumer_id]
    assert entry_of(workers, worker) is None
    [audit] = [e for e in workers.ops.audit.entries().items if e.action == "worker.forget"]
    assert (audit.actor, audit.reason) == ("tester", "scaled down")
    with pytest.raises(NotFound, match="no worker"):
        workers.forget("leaving@localhost")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TASKQUEUE), *args], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip


def test_cli_lists_workers_and_shows_a_tasks_status(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker
) -> None:
    start_worker(env=env(), hostname="listed@localhost").wait_ready()
    base = ["--broker-url", redis_url, "--keyprefix", keyprefix]
    listed = run_cli(*base, "workers", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(w["hostname"], w["state"]) for w in json.loads(listed.stdout)] == [
        ("listed@localhost", "online")]  # fmt: skip
    table = run_cli(*base, "workers")
    assert "listed@localhost" in table.stdout and "online" in table.stdout

    dead = client.send_task("no.such.task", ()).id
    wait_for(lambda: run_cli(*base, "status", dead, "--json").returncode == 0, timeout=30)
    status = json.loads(run_cli(*base, "status", dead, "--json").stdout)
    assert [(m["queue"], m["state"], m["reason"]) for m in status["broker"]] == [
        (QUEUE, "dead", "unknown_task")]  # fmt: skip
    missing = run_cli(*base, "status", "no-such-task")
    assert missing.returncode != 0 and "no task 'no-such-task'" in missing.stderr
