"""Queues, dead letters and workers through the REST API, with real workers:

- a paused queue (paused from the CLI) is durable broker state: no consumer leases from it,
  publishing still works, other queues keep running; resumed through the API, its tasks run;
- a queue purge needs its name typed again, and counts what it deleted;
- dead letters: replay by filter to another queue with a dry run first, purge older than;
- workers: online with their details, a killed one stale and recovered through the API, a
  shut-down one offline, then forgotten;
- payloads in other content types are shown opaque, never deserialized.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import StartWorker, wait_for
from tests.support.control_plane import make_api
from tests.test_api_tasks import BACKEND_APP, submit, task_state, wait_place
from tests.test_cli import taskqueue

WINDOW = {"heartbeat_interval": 0.5, "heartbeat_timeout": 3.0}


@pytest.fixture
def windowed_api(api_env: dict[str, str]) -> Iterator[Any]:
    """The app judging liveness with the workers' short heartbeat window."""
    yield from make_api(api_env["TQ_TEST_REDIS_URL"], api_env["TQ_TEST_KEYPREFIX"],
                        api_env["TQ_TEST_RESULT_BACKEND"], api_env.get("TQ_TEST_DB_SCHEMA"),
                        transport_options=WINDOW)  # fmt: skip


def windowed(api_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**api_env, "TQ_TEST_TRANSPORT_OPTIONS": json.dumps(WINDOW), **extra}


def queue_of(api: Any, name: str) -> dict[str, Any]:
    found = api.get(f"/api/v1/queues/{name}")
    assert found.status_code == 200, found.json
    return found.json


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return taskqueue("--broker-url", env["TQ_TEST_REDIS_URL"], "--keyprefix",
                     env["TQ_TEST_KEYPREFIX"], *args)  # fmt: skip


def test_a_paused_queue_is_not_leased_from_until_resumed(
    api: Any, api_env: dict[str, str], start_worker: StartWorker
) -> None:
    paused = cli("queues", "pause", "held", "--note", "deploying", env=api_env)
    assert paused.returncode == 0 and "paused queue held" in paused.stdout, paused.stderr
    start_worker(app=BACKEND_APP, env=api_env, queues=("held", "celery")).wait_ready()
    waiting = submit(api, "bk.add", 1, 1, queue="held")
    control = submit(api, "bk.add", 2, 2, queue="celery")
    wait_place(api, control, "SUCCESS")  # the worker runs, and has polled "held" meanwhile
    state = queue_of(api, "held")
    assert (state["paused"], state["ready"], state["inflight"]) == (True, 1, 0), state
    assert task_state(api, waiting)["place"] == "queued"
    again = api.post("/api/v1/queues/held/pause", {})
    assert again.json == {"queue": "held", "paused": True, "changed": False}

    resumed = api.post("/api/v1/queues/held/resume", {"reason": "deployed"})
    assert resumed.json == {"queue": "held", "paused": False, "changed": True}, resumed.json
    assert wait_place(api, waiting, "SUCCESS")["result"]["result"] == 2
    entries = api.get("/api/v1/audit", query_string={"target": "held"}).json["items"]
    assert [(e["action"], e["reason"], e["detail"]["changed"]) for e in entries] == [
        ("queue.resume", "deployed", True), ("queue.pause", "", False),
        ("queue.pause", "deploying", True)]  # fmt: skip
    assert entries[0]["actor"] == "operator-user"


def test_a_queue_purge_needs_its_name_and_counts_what_it_deleted(api: Any) -> None:
    for i in range(3):
        submit(api, "bk.add", i, i, queue="doomed", priority=i)
    submit(api, "bk.add", 9, 9, queue="doomed", countdown=600)
    state = queue_of(api, "doomed")
    assert state["ready"] == 3 and state["delayed"] == 1
    assert state["ready_by_priority"] == {"0": 1, "1": 1, "2": 1}

    kept = api.post("/api/v1/queues/doomed/purge", {"confirm": "doomed", "keep_delayed": True},
                    role="admin")  # fmt: skip
    assert kept.json == {"queue": "doomed", "purged": 3, "include_delayed": False}, kept.json
    assert (queue_of(api, "doomed")["ready"], queue_of(api, "doomed")["delayed"]) == (0, 1)
    gone = api.post("/api/v1/queues/doomed/purge", {"confirm": "doomed"}, role="admin")
    assert gone.json["purged"] == 1
    assert queue_of(api, "doomed")["delayed"] == 0


def test_dead_letters_replayed_by_filter_to_another_queue_and_purged(
    api: Any, api_env: dict[str, str], start_worker: StartWorker
) -> None:
    start_worker(app=BACKEND_APP, env=api_env).wait_ready()
    failed = [submit(api, "bk.fail", f"boom {i}") for i in range(3)]
    for task_id in failed:
        wait_place(api, task_id, "dead-lettered")
    first = api.get("/api/v1/dlq", query_string={"limit": 2}).json
    rest = api.get("/api/v1/dlq", query_string={"limit": 2, "cursor": first["next_cursor"]}).json
    assert len(first["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert {e["task_id"] for e in first["items"] + rest["items"]} == set(failed)

    selection = {"filter": {"exception": "ValueError", "queue": "celery"}, "to_queue": "parked"}
    dry = api.post("/api/v1/dlq/replay", {**selection, "dry_run": True})
    assert (dry.json["matched"], dry.json["done"], dry.json["dry_run"]) == (3, 0, True), dry.json
    done = api.post("/api/v1/dlq/replay", {**selection, "rate": 50, "reason": "park them"})
    assert (done.json["matched"], done.json["done"], done.json["to_queue"]) == (3, 3, "parked")
    assert queue_of(api, "parked")["ready"] == 3
    assert {task_state(api, t)["place"] for t in failed} == {"queued"}

    start_worker(app=BACKEND_APP, env=api_env, queues=("parked",)).wait_ready()
    for task_id in failed:
        wait_place(api, task_id, "dead-lettered")
    assert api.get("/api/v1/dlq/stats").json["by_queue"] == {"parked": 3}
    purge = {"filter": {"queue": "parked"}, "older_than": 0}
    counted = api.post("/api/v1/dlq/purge", {**purge, "dry_run": True}, role="admin")
    assert (counted.json["matched"], counted.json["done"]) == (3, 0), counted.json
    purged = api.post("/api/v1/dlq/purge", {**purge, "reason": "cannot be fixed"}, role="admin")
    assert purged.json["done"] == 3, purged.json
    assert api.get("/api/v1/dlq/stats").json["total"] == 0
    everything = api.post("/api/v1/dlq/purge", {}, role="admin")
    assert everything.status_code == 422, "a purge names what it deletes (a filter or all)"


def test_an_expired_dead_letter_is_replayed_with_a_new_expiry(
    api: Any, api_env: dict[str, str]
) -> None:
    from tests.app import make_app
    from tests.test_dlq import expire

    client = make_app(api_env["TQ_TEST_REDIS_URL"], api_env["TQ_TEST_KEYPREFIX"])
    try:
        task_id = expire(client, "via the API")
    finally:
        client.close()
    refused = api.post(f"/api/v1/dlq/{task_id}/replay", {})
    assert refused.status_code == 422, refused.json
    assert "clear_expiry" in refused.json["error"]["message"]
    bulk = api.post("/api/v1/dlq/replay", {"ids": [task_id], "dry_run": True})
    assert bulk.status_code == 422, bulk.json
    done = api.post(f"/api/v1/dlq/{task_id}/replay", {"expires": 600, "reason": "still wanted"})
    assert (done.status_code, done.json["done"]) == (200, 1), done.json
    assert task_state(api, task_id)["place"] == "queued"


def test_workers_online_stale_recovered_shut_down_and_forgotten(
    windowed_api: Any, api_env: dict[str, str], start_worker: StartWorker
) -> None:
    api = windowed_api
    env = windowed(api_env, TQ_TEST_ACKS_LATE="1", TQ_TEST_TRACK_STARTED="1")
    doomed = start_worker(app=BACKEND_APP, env=env, concurrency=1,
                          hostname="doomed@localhost").wait_ready()  # fmt: skip
    held = submit(api, "bk.sleep", 15)  # long enough to be running at the kill below; the
    # survivor's warm shutdown waits for it
    wait_for(lambda: task_state(api, held)["result"]["state"] == "STARTED", timeout=30)
    [online] = api.get("/api/v1/workers", query_string={"status": "online"}).json
    assert (online["hostname"], online["pid"], online["queues"]) == (
        "doomed@localhost",
        doomed.pid,
        ["celery"],
    )
    not_stale = api.post("/api/v1/workers/doomed@localhost/recover", {})
    assert not_stale.status_code == 409, not_stale.json

    doomed.kill(signal.SIGKILL)
    wait_for(lambda: api.get("/api/v1/workers", query_string={"status": "stale"}).json,
             timeout=15, message="the killed worker did not turn stale")  # fmt: skip
    recovered = api.post("/api/v1/workers/doomed@localhost/recover", {"reason": "node lost"})
    assert recovered.status_code == 200, recovered.json
    assert [r["returned"] for r in recovered.json] == [[held]]
    assert task_state(api, held)["place"] == "queued"
    [gone] = api.get("/api/v1/workers/doomed@localhost").json
    assert (gone["state"], gone["recovered_by"]) == ("offline", "operator-user"), gone

    survivor = start_worker(app=BACKEND_APP, env=env, hostname="survivor@localhost").wait_ready()
    wait_for(lambda: task_state(api, held)["result"]["state"] == "STARTED", timeout=30)
    down = api.post("/api/v1/workers/survivor@localhost/shutdown", {}, role="operator")
    assert down.status_code == 403
    down = api.call("POST", "/api/v1/workers/survivor@localhost/shutdown",
                    json={"reason": "drain"})  # fmt: skip
    assert down.status_code == 200, down.json
    wait_for(lambda: not survivor.running, timeout=90, message="the worker did not shut down")
    wait_for(lambda: api.get("/api/v1/workers/survivor@localhost").json[0]["state"] ==
             "offline", timeout=15)  # fmt: skip

    forgotten = api.delete("/api/v1/workers/doomed@localhost", query_string={"reason": "gone"})
    assert forgotten.status_code == 200, forgotten.json
    assert api.get("/api/v1/workers/doomed@localhost").status_code == 404
    assert [w["hostname"] for w in api.get("/api/v1/workers").json] == ["survivor@localhost"]


def test_payloads_in_other_content_types_are_opaque(
    api: Any, api_env: dict[str, str], start_worker: StartWorker
) -> None:
    pickled = {"task_serializer": "pickle", "result_serializer": "pickle",
               "accept_content": ["json", "pickle"]}  # fmt: skip
    env = {**api_env, "TQ_TEST_EXTRA_CONF": json.dumps(pickled)}
    # Celery refuses pickle as root unless told; test machines often run as root
    start_worker(app=BACKEND_APP, env={**env, "C_FORCE_ROOT": "1"}).wait_ready()
    from tests.backend_app import make_app

    client = make_app(env)
    try:
        sent = client.send_task("bk.as_set", ([3, 1, 2],))
        assert sent.get(timeout=30) == {1, 2, 3}  # the client app itself unpickles it
    finally:
        client.close()
    done = task_state(api, sent.id)
    for field in ("args", "kwargs", "result"):
        value = done["result"][field]
        assert value["opaque"] is True and value["bytes"] > 0, (field, value)
        assert value["content_type"] == "application/x-python-serialize"
    [listed] = api.get("/api/v1/tasks", query_string={"name": "bk.as_set"}).json["items"]
    assert listed["args"]["opaque"] is True and listed["result"] is None  # lists omit results
